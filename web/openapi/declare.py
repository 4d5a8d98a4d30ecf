"""What a view declares about itself for the OpenAPI document.

Each view carries its documentation under its route decorator (`@documented(...)`);
`web.openapi.routes` walks the app's url_map and reads it, so a path and a method
always come from Flask. A view this project does not write (a blueprint's static
files, Swagger UI's page) is declared on the app, by endpoint, where its blueprint is
registered. Views import this module; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel

JSON = "application/json"
HTML = {"text/html": {"type": "string"}}
BINARY = {"type": "string", "format": "binary"}
LOCATION = {"Location": "where to read the result"}

View = TypeVar("View", bound=Callable[..., Any])
_ATTRIBUTE = "openapi_declarations"
_ENDPOINTS = "openapi_endpoints"  # app.extensions key: endpoint -> declarations


@dataclass(frozen=True)
class Answer:
    """One documented status: its schema (a pydantic type, or a raw schema for other media)."""

    description: str
    model: type | None = None
    media: dict[str, dict[str, Any]] | None = None  # media type -> raw schema
    headers: dict[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True, kw_only=True)
class Documented:
    """One operation. Security is not declared: the app's token check decides it (`web.auth`)."""

    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    errors: tuple[int, ...] = ()  # statuses answered with the JSON error body
    body: type | None = None
    query: type[BaseModel] | None = None
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema
    headers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    # Only for this rule / method of the view (None: every one); a view may serve several.
    rule: str | None = None
    method: str | None = None


@dataclass(frozen=True, kw_only=True)
class Undocumented:
    """Deliberately left out of the document, and why."""

    reason: str
    rule: str | None = None
    method: str | None = None


Declaration = Documented | Undocumented


def documented(**fields: Any) -> Callable[[View], View]:
    """Document the view's operation (the fields of `Documented`)."""
    return _mark(Documented(**fields))


def undocumented(reason: str, **fields: Any) -> Callable[[View], View]:
    return _mark(Undocumented(reason=reason, **fields))


def declare_endpoint(app: Flask, endpoint: str, *declarations: Declaration) -> None:
    """Declare the operations of a view this project does not write (it cannot be decorated)."""
    app.extensions.setdefault(_ENDPOINTS, {}).setdefault(endpoint, []).extend(declarations)


def declarations(app: Flask, endpoint: str) -> tuple[Declaration, ...]:
    view = app.view_functions[endpoint]
    return (*getattr(view, _ATTRIBUTE, ()), *app.extensions.get(_ENDPOINTS, {}).get(endpoint, ()))


def _mark(declaration: Declaration) -> Callable[[View], View]:
    def mark(view: View) -> View:
        # The same function object the route decorator registers, so either order works.
        setattr(view, _ATTRIBUTE, (*getattr(view, _ATTRIBUTE, ()), declaration))
        return view

    return mark
