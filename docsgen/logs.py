"""The logs reference: the fields of a JSON line (`tasks.observability.logs`), and what the
web's access line adds, read off a real request to the app."""

from __future__ import annotations

import logging

from docsgen.markdown import code, table
from docsgen.web_app import web_app
from web.answered import ANSWERED

ACCESS_LOGGER = "web.access"
_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_fields_table() -> str:
    from tasks.observability.logs import JSON_FIELDS, JSON_RENAMED, JSON_TIMESTAMP

    rows = [(code(JSON_RENAMED.get(field, field)), code(field)) for field in JSON_FIELDS]
    rows.append((code(JSON_TIMESTAMP), "`created`, as ISO 8601 in UTC"))
    return table(("field", "log record attribute"), rows)


def access_fields_table() -> str:
    from tasks.observability.logs import JSON_FIELDS

    record = _access_record()
    # What every line has (the request id among them) is the other table's.
    standard = set(vars(logging.makeLogRecord({}))) | set(JSON_FIELDS)
    extra = {name: value for name, value in vars(record).items() if name not in standard}
    rows = [(code(name), _TYPES.get(type(value), type(value).__name__)) for name, value in extra.items()]
    return table(("field", "type"), rows)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _access_record() -> logging.LogRecord:
    """The access line of one request to /healthz (it touches no dependency)."""
    app = web_app()
    logger = logging.getLogger(ACCESS_LOGGER)
    kept, level = _Kept(), logger.level
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:
        app.test_client().get("/healthz")
        ANSWERED.write()  # the line is written after the answer
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
    if len(kept.records) != 1:
        raise LookupError(f"a request logged {len(kept.records)} {ACCESS_LOGGER} lines, not one")
    return kept.records[0]
