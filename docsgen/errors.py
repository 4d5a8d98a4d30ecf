"""The error codes reference, from the catalogue every raised code must be in (`web.error_codes`)."""

from __future__ import annotations

from docsgen.markdown import code, table
from web.error_codes import ERROR_CODES


def errors_table() -> str:
    ordered = sorted(ERROR_CODES.items(), key=lambda item: (item[1].statuses, item[0]))
    rows = [
        (code(name), ", ".join(map(str, error.statuses)), error.meaning, error.details)
        for name, error in ordered
    ]
    return table(("code", "status", "meaning", "details"), rows)
