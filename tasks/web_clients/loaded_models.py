"""What the predict workers report they have loaded, and which files they could not load
(`tasks.worker.model_registry`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from tasks.contract import LOADED_MODELS_KEY, MODEL_FAILURES_KEY

Reported = dict[str, dict[str, Any]]  # name@version -> what a worker said of it


@dataclass(frozen=True)
class ModelReports:
    loaded: Reported  # the model's description, and `reported_at`
    failed: Reported  # `code`, `error`, `serving` (the version the worker kept, or None), `reported_at`

    @classmethod
    def read(cls, client: redis.Redis) -> ModelReports:
        pipeline = client.pipeline(transaction=False)
        pipeline.hgetall(LOADED_MODELS_KEY)
        pipeline.hgetall(MODEL_FAILURES_KEY)
        loaded, failed = pipeline.execute()
        return cls(_decoded(loaded), _decoded(failed))

    def versions(self, name: str) -> dict[str, float]:
        """version -> when it was last reported loaded, for every version of `name` a worker loaded."""
        found = {}
        for key, description in self.loaded.items():
            model, _, version = key.rpartition("@")
            if model == name:
                found[version] = description.get("reported_at", 0.0)
        return found


def loaded_descriptions(client: redis.Redis) -> Reported:
    """`name@version` -> description, as reported by the workers."""
    return _decoded(client.hgetall(LOADED_MODELS_KEY))


def _decoded(entries: dict[bytes, bytes]) -> Reported:
    return {key.decode(): json.loads(value) for key, value in entries.items()}
