"""Pydantic models of what the V2 routes answer: their OpenAPI schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class V2Error(BaseModel):
    """Every error on /v2, in the protocol's shape."""

    error: str


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension not known (the batch, or not yet reported)")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="content hashes (first 16 hex digits of the file's SHA-256)")
    platform: str = Field(description="`xgboost`, `lightgbm` or `pytorch`")
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] = Field(description="row-major, flat; null for a non-finite prediction")


class V2InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str | None = Field(default=None, description="the request's `id`, when it gave one")
    model_name: str
    model_version: str
    outputs: list[V2OutputTensor]
    parameters: dict[str, Any] = Field(description="`prediction_id`: the prediction log's id of this answer")
