"""The configuration reference: every field of `config.Settings`, as the variable it is read from."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from config import Settings
from docsgen.markdown import code, table

_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", SecretStr: "secret"}
# pydantic keeps `Field(ge=1)` as an annotated_types rule: its symbol, and the attribute with its value.
_BOUNDS = {
    annotated_types.Ge: ("≥", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("≤", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a field is read from (pydantic-settings: its name, any case)."""
    alias = field.validation_alias
    return (alias if isinstance(alias, str) else name).upper()


def variables() -> list[str]:
    return [variable(name, field) for name, field in Settings.model_fields.items()]


def settings_table() -> str:
    rows = [
        (code(variable(name, field)), _type(field), _default(field.default), field.description or "")
        for name, field in Settings.model_fields.items()
    ]
    missing = [row[0] for row in rows if not row[3]]
    if missing:
        raise ValueError(f"config.Settings fields without a description: {', '.join(missing)}")
    return table(("variable", "type", "default", "meaning"), rows)


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is Literal:
        kind = "one of " + ", ".join(code(value) for value in typing.get_args(annotation))
    else:
        kind = _TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = []
    for rule in field.metadata:
        if type(rule) in _BOUNDS:
            symbol, attribute = _BOUNDS[type(rule)]
            bounds.append(f"{symbol} {_value(getattr(rule, attribute))}")
    return ", ".join([kind, *bounds])


def _default(value: Any) -> str:
    return "unset" if value is None else code(_value(value))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"  # relative to the working directory, as the README always wrote it
    return str(value)
