"""JSON errors: `{"error": {"code", "message", "details"}}`, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from db import StatsBehind, describe_errors, statement_timed_out
from models import ModelError
from tasks.contract import brief
from web.settings import current_settings

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return jsonify(error=body), status


def invalid(
    error: ValidationError, status: int = 422, what: str = "request body", root: str = "body"
) -> ApiError:
    problems = describe_errors(error, root)
    fields = ", ".join(sorted({problem["field"] for problem in problems}))
    return ApiError(status, "invalid_input", f"invalid {what}: {fields}", problems)


def database_unavailable(error: Exception):
    """503 for a read the database cannot answer now (down, silent, read-only, mid-migration),
    504 for one that ran past WEB_STATEMENT_TIMEOUT_S: input is checked before it reaches a
    query, so a database error here is the server's."""
    if statement_timed_out(error):
        log.warning("read cancelled at the statement timeout: %s", brief(error))
        timeout = current_settings().web_statement_timeout_s
        message = f"the database did not answer within {timeout:g}s (WEB_STATEMENT_TIMEOUT_S)"
        response = error_response(504, "database_timeout", message)
    else:
        log.warning("database unavailable: %s", brief(error))
        message = "the trade database does not answer; try again"
        response = error_response(503, "database_unavailable", message)
    response[0].headers["Retry-After"] = "5"
    return response


def stats_behind(error: StatsBehind):
    """503 while the kept statistics fold a backlog longer than a read may wait for."""
    log.warning("%s", error)
    response = error_response(503, "stats_catching_up", str(error), {"behind_s": round(error.age_s, 1)})
    response[0].headers["Retry-After"] = "5"
    return response


def broker_unavailable(error: Exception):
    """503 for a prediction route whose broker or results' Redis cannot answer now (down,
    silent, or refusing writes: all the same to a caller)."""
    log.warning("broker or results unavailable: %s", brief(error))
    response = error_response(
        503, "broker_unavailable", "the broker or the results' Redis does not answer; try again"
    )
    response[0].headers["Retry-After"] = "2"
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.details)

    app.register_error_handler(StatsBehind, stats_behind)

    @app.errorhandler(ModelError)
    def _model_error(error: ModelError):
        response = error_response(error.status, error.code, error.message, error.details)
        if error.status == 503:  # not ready yet (a model loading, Redis away): when to ask again
            retry_after = (error.details or {}).get("retry_after_s", 1)
            response[0].headers["Retry-After"] = str(retry_after if isinstance(retry_after, int) else 1)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and error.valid_methods:
            response[0].headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
