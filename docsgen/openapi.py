"""The HTTP API and V2 references: the app's own OpenAPI document (`web.openapi`), as Markdown.

Per tag, each operation: method and path, summary and description, its parameters, its
request body's schema, its responses; then every schema those operations use. The V2
routes (the Open Inference Protocol, under /v2) go on a page of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from docsgen.markdown import code, table
from docsgen.web_app import web_app

V2_PREFIX = "/v2/"
_REF = "#/components/"
_JSON = "application/json"
_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} long"),
    ("maxLength", "at most {} long"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def tag(self) -> str:
        return self.spec["tags"][0]


def api_document() -> dict[str, Any]:
    from web.openapi import document

    return document(web_app())


def operations(document: dict[str, Any], v2: bool) -> list[Operation]:
    return [
        Operation(method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if path.startswith(V2_PREFIX) == v2
    ]


def http_api_reference() -> str:
    return _reference(api_document(), v2=False)


def v2_reference() -> str:
    return _reference(api_document(), v2=True)


def _reference(document: dict[str, Any], v2: bool) -> str:
    chosen = operations(document, v2)
    parts = [
        "## Routes",
        f"Generated from the app's OpenAPI {document['openapi']} document (`GET /api/v1/openapi.json`, "
        f"version {document['info']['version']}): {len(chosen)} operations.",
    ]
    if v2:  # one protocol: its operations together, in the order the app routes them
        parts += [_operation(operation, document, "###") for operation in chosen]
    else:
        parts += _by_tag(chosen, document)
    parts += ["## Schemas", *_schemas(document, _schemas_used(chosen, document))]
    return "\n\n".join(parts)


def _by_tag(chosen: list[Operation], document: dict[str, Any]) -> Iterator[str]:
    tags = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    for tag in [*tags, *sorted({operation.tag for operation in chosen} - set(tags))]:
        tagged = [operation for operation in chosen if operation.tag == tag]
        if tagged:
            yield f"### {tag}" + (f": {tags[tag]}" if tags.get(tag) else "")
            yield from (_operation(operation, document, "####") for operation in tagged)


def _operation(operation: Operation, document: dict[str, Any], level: str) -> str:
    spec = operation.spec
    lines = [
        f"{level} `{operation.method} {operation.path}` {{ #{spec['operationId']} }}",
        spec.get("summary", ""),
    ]
    if spec.get("description"):
        lines.append(spec["description"])
    lines.append("Needs the bearer token when `API_TOKEN` is set." if spec.get("security") != [] else "Open.")
    if spec.get("parameters"):
        rows = [
            (
                code(parameter["name"]),
                parameter["in"],
                "yes" if parameter.get("required") else "no",
                kind(parameter.get("schema", {})),
                parameter.get("description") or parameter.get("schema", {}).get("description", ""),
            )
            for parameter in spec["parameters"]
        ]
        lines.append(table(("parameter", "in", "required", "type", "meaning"), rows))
    body = spec.get("requestBody")
    if body is not None:
        lines.append("Body: " + "; ".join(_media(body["content"])))
    rows = []
    for status, answer in spec["responses"].items():
        answer = _resolved(answer, document)
        headers = ", ".join(code(name) for name in answer.get("headers", {}))
        rows.append(
            (status, answer.get("description", ""), "; ".join(_media(answer.get("content", {}))), headers)
        )
    lines.append(table(("status", "answer", "body", "headers"), rows))
    return "\n\n".join(line for line in lines if line)


def _media(content: dict[str, Any]) -> Iterator[str]:
    for media_type, media in content.items():
        described = kind(media.get("schema", {}))
        yield described if media_type == _JSON else f"{described} ({code(media_type)})"


def kind(schema: dict[str, Any], link: Callable[[str], str] | None = None) -> str:
    """A JSON Schema in a few words: its type, constraints and default; schemas by name, linked."""
    link = link or _link
    if "$ref" in schema:
        return link(schema["$ref"].rpartition("/")[2])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        named = [kind(option, link) for option in options if option.get("type") != "null"]
        nullable = len(named) < len(options)
        text = " or ".join(named) + (" or null" if nullable else "")
    elif "allOf" in schema and len(schema["allOf"]) == 1:
        text = kind(schema["allOf"][0], link)
    elif "enum" in schema:
        text = "one of " + ", ".join(code(_literal(value)) for value in schema["enum"])
    elif "const" in schema:
        text = code(_literal(schema["const"]))
    else:
        text = _typed(schema, link)
    bounds = [form.format(_number(schema[key])) for key, form in _CONSTRAINTS if key in schema]
    if "pattern" in schema:
        bounds.append(f"matching {code(schema['pattern'])}")
    if "default" in schema and schema["default"] is not None:
        bounds.append(f"default {code(_literal(schema['default']))}")
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _literal(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _typed(schema: dict[str, Any], link: Callable[[str], str]) -> str:
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return " or ".join(kinds)
    if kinds == "array":
        items = schema.get("items")
        return f"array of {kind(items, link)}" if items else "array"
    if kinds == "object":
        values = schema.get("additionalProperties")
        return f"object of {kind(values, link)}" if isinstance(values, dict) and values else "object"
    text = kinds or "any"
    return f"{text} ({schema['format']})" if "format" in schema else text


def _number(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _link(name: str) -> str:
    return f"[{name}](#{_anchor(name)})"


def _anchor(name: str) -> str:
    return "schema-" + name.replace("_", "-").lower()


def _resolved(item: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` to a reusable response, replaced by it."""
    while "$ref" in item and item["$ref"].startswith(_REF + "responses/"):
        item = document["components"]["responses"][item["$ref"].rpartition("/")[2]]
    return item


def _schemas_used(chosen: list[Operation], document: dict[str, Any]) -> list[str]:
    """The schemas the operations refer to, and those they refer to, in turn."""
    found: dict[str, None] = {}
    waiting = [_resolved(operation.spec, document) for operation in chosen]
    waiting = [_expand_responses(spec, document) for spec in waiting]
    while waiting:
        for ref in _refs(waiting.pop()):
            name = ref.rpartition("/")[2]
            if ref.startswith(_REF + "schemas/") and name not in found:
                found[name] = None
                waiting.append(document["components"]["schemas"][name])
    return sorted(found)


def _expand_responses(spec: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    responses = {status: _resolved(answer, document) for status, answer in spec["responses"].items()}
    return {**spec, "responses": responses}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value["$ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _schemas(document: dict[str, Any], names: list[str]) -> Iterator[str]:
    for name in names:
        schema = document["components"]["schemas"][name]
        lines = [f"### {name} {{ #{_anchor(name)} }}"]
        if schema.get("description"):
            lines.append(" ".join(schema["description"].split()))
        properties = schema.get("properties")
        if properties:
            required = set(schema.get("required", ()))
            rows = [
                (code(field), kind(spec), "yes" if field in required else "no", spec.get("description", ""))
                for field, spec in properties.items()
            ]
            lines.append(table(("field", "type", "required", "meaning"), rows))
        else:
            lines.append(kind(schema))
        yield "\n\n".join(lines)
