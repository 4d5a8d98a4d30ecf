"""Which part each placeholder stands for, and putting the parts in their pages."""

from __future__ import annotations

import re
from collections.abc import Callable

from docsgen.errors import errors_table
from docsgen.logs import access_fields_table, json_fields_table
from docsgen.metrics import metrics_table
from docsgen.openapi import http_api_reference, v2_reference
from docsgen.settings import settings_table
from docsgen.tasks import tasks_table

PLACEHOLDER = re.compile(r"^<!-- generated: (?P<name>[a-z0-9-]+) -->$", re.MULTILINE)

GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "metrics": metrics_table,
    "errors": errors_table,
    "http-api": http_api_reference,
    "v2": v2_reference,
    "tasks": tasks_table,
    "log-fields": json_fields_table,
    "access-log-fields": access_fields_table,
}


def expand(markdown: str) -> str:
    """`markdown` with each placeholder replaced by its part; an unknown one is an error."""

    def part(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise KeyError(f"no generated part {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return PLACEHOLDER.sub(part, markdown)
