"""The OpenAPI 3.1 document of an app, built with openapi-pydantic from its routes' declarations.

Paths and methods come from the app's url_map (`web.openapi.routes`), schemas from the
pydantic types the views declare, security from the app's token check (`web.auth`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import Flask
from openapi_pydantic import (
    Components,
    Header,
    Info,
    MediaType,
    OpenAPI,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Response,
    Schema,
    SecurityScheme,
    Tag,
)
from pydantic.json_schema import models_json_schema

from web.auth import protects
from web.openapi.declare import JSON, Answer, Documented
from web.openapi.responses import ErrorResponse
from web.openapi.routes import routes

ERRORS = {
    400: ("BadRequest", "malformed JSON, a bad query string or path parameter"),
    401: ("Unauthorized", "missing or wrong bearer token (only when API_TOKEN is set)"),
    404: ("NotFound", "unknown trade, model, job or route"),
    405: ("MethodNotAllowed", "method not allowed on this path; `Allow` lists those that are"),
    409: ("Conflict", "the change cannot be made in the present state (`code` says why)"),
    413: ("PayloadTooLarge", "body larger than MAX_REQUEST_BYTES"),
    422: ("UnprocessableEntity", "valid JSON of the wrong shape; `details` names each field"),
    503: ("ServiceUnavailable", "a dependency (database, broker, worker) is down"),
    504: (
        "GatewayTimeout",
        "no answer in time: a prediction (`details` says where to poll), or a read past"
        " WEB_STATEMENT_TIMEOUT_S",
    ),
}
DESCRIPTION = """\
Trade journal and model serving of a trading bot.

Every error is JSON, `{"error": {"code", "message", "details"}}`, with the status of its
kind (see the reusable responses); an unsupported method on a path is a 405 with `Allow`.
When API_TOKEN is set, the `/api/v1` routes of the journal and the models need
`Authorization: Bearer <token>`; health, readiness, metrics and this documentation stay open.
"""
REF = "#/components/schemas/{model}"
_CONVERTER = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """The OpenAPI path of a Flask rule: `/trades/<trade_id>` -> `/trades/{trade_id}`."""
    return _CONVERTER.sub(r"{\1}", rule)


def build_document(app: Flask, version: str) -> dict[str, Any]:
    """Raises `UndocumentedRoutes` when a route of the app declares nothing."""
    operations = [route for route in routes(app) if isinstance(route.declared, Documented)]
    # Without the token check (require_token_for_api) nothing asks for a token.
    open_paths = app.extensions.get("api_open_paths")
    # One JSON Schema per pydantic type (models and pydantic dataclasses alike), by pydantic.
    types = sorted(_types(route.declared for route in operations), key=lambda model: model.__name__)
    refs, definitions = models_json_schema([(model, "validation") for model in types], ref_template=REF)
    schemas = {model: Reference(ref=refs[(model, "validation")]["$ref"]) for model in types}

    paths: dict[str, PathItem] = {}
    for route in operations:
        secured = open_paths is not None and protects(route.rule, open_paths)
        item = paths.setdefault(openapi_path(route.rule), PathItem())
        setattr(item, route.method.lower(), _operation(route.declared, secured, schemas))
    document = OpenAPI(
        info=Info(title="Trade journal and model serving", version=version, description=DESCRIPTION),
        paths=paths,
        tags=[
            Tag(name="trades", description="the trade journal"),
            Tag(name="ml", description="model serving"),
            Tag(
                name="releases", description="model versions, champion and challenger, promotion and rollback"
            ),
            Tag(name="operations", description="health, readiness, metrics"),
            Tag(name="docs", description="this documentation"),
        ],
        security=[{"bearerAuth": []}],
        components=Components(
            schemas={name: Schema.model_validate(schema) for name, schema in definitions["$defs"].items()},
            securitySchemes={
                "bearerAuth": SecurityScheme(
                    type="http", scheme="bearer", description="the value of API_TOKEN, when it is set"
                )
            },
            responses={
                name: Response(description=text, content={JSON: MediaType(schema=schemas[ErrorResponse])})
                for name, text in ERRORS.values()
            },
        ),
    )
    dumped = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The schemas exactly as pydantic wrote them (the dump above would drop `"default": null`).
    dumped["components"]["schemas"] = definitions["$defs"]
    return dumped


def _types(operations: Iterable[Documented]) -> set[type]:
    found: set[type] = {ErrorResponse}
    for operation in operations:
        found.update(answer.model for answer in operation.answers.values() if answer.model is not None)
        if operation.body is not None:
            found.add(operation.body)
    return found


def _operation(route: Documented, secured: bool, schemas: dict[type, Reference]) -> Operation:
    answers: dict[str, Response | Reference] = {
        str(status): _response(answer, schemas) for status, answer in route.answers.items()
    }
    for status in route.errors:
        answers[str(status)] = Reference(ref=f"#/components/responses/{ERRORS[status][0]}")
    if secured:
        answers.setdefault("401", Reference(ref=f"#/components/responses/{ERRORS[401][0]}"))
    return Operation(
        operationId=route.operation_id,
        summary=route.summary,
        description=route.description or None,
        tags=[route.tag],
        parameters=_parameters(route) or None,
        requestBody=RequestBody(required=True, content={JSON: MediaType(schema=schemas[route.body])})
        if route.body is not None
        else None,
        responses=answers,
        security=None if secured else [],
    )


def _parameters(route: Documented) -> list[Parameter]:
    parameters = [
        Parameter(name=name, param_in="path", required=True, param_schema=schema)
        for name, schema in route.path.items()
    ]
    for name, (description, schema) in route.headers.items():
        parameters.append(
            Parameter(name=name, param_in="header", description=description, param_schema=schema)
        )
    if route.query is not None:
        schema = route.query.model_json_schema()
        for name, prop in schema["properties"].items():
            parameters.append(
                Parameter(
                    name=name,
                    param_in="query",
                    required=name in schema.get("required", ()),
                    description=prop.pop("description", None),
                    param_schema=_not_null(prop),
                )
            )
    return parameters


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    # An optional query parameter is one left out: it is never null.
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if len(options) == 1:
        rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
        return {**rest, **options[0]}
    return schema


def _response(answer: Answer, schemas: dict[type, Reference]) -> Response:
    if answer.model is not None:
        content = {JSON: MediaType(schema=schemas[answer.model])}
    else:
        content = {kind: MediaType(schema=schema) for kind, schema in (answer.media or {}).items()}
    headers = {
        name: Header(description=text, required=True, param_schema=Schema(type="string"))
        for name, text in answer.headers.items()
    }
    return Response(description=answer.description, content=content, headers=headers or None)
