"""Request ids and one access line per request.

The id comes from the caller's `X-Request-ID` header when it is sane, else a new one; it
is returned in the response's `X-Request-ID`, bound for the request's log lines and
copied into the headers of the task messages the request publishes (`tasks.contract.publisher`).
The access lines go to stderr, or to the file ACCESS_LOG names (`make run` sets one: a
line per request through honcho's pipe cost the stack a quarter of its throughput). Each
answered request's line and latency observation are written after the answer, in
batches (`web.answered`).
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path

from flask import Flask, Response, g, request

from tasks.observability import request_id
from tasks.observability.logs import TEXT_FORMAT, adopt, configure_root
from web.answered import ANSWERED, Answered, access_log
from web.settings import current_settings

HEADER = "X-Request-ID"

log = access_log


def log_requests(app: Flask) -> None:
    settings = current_settings(app)
    json_lines = settings.log_format == "json"
    configure_root(json_lines=json_lines)
    if settings.access_log is not None:
        _to_file(settings.access_log, json_lines)

    @app.before_request
    def _bind_request_id() -> None:
        g.request_started = time.perf_counter()
        g.request_id_token = request_id.bind(request_id.accept_or_new(request.headers.get(HEADER)))

    @app.after_request
    def _return_id_and_record(response: Response) -> Response:
        rid = request_id.current()
        if rid:
            response.headers[HEADER] = rid
        started = g.get("request_started")
        if started is not None:
            ANSWERED.add(
                Answered(
                    at=time.time(),
                    duration_s=time.perf_counter() - started,
                    method=request.method,
                    path=request.path,
                    # The route's pattern, not the path: label values stay few.
                    route=request.url_rule.rule if request.url_rule is not None else "unmatched",
                    status=response.status_code,
                    request_id=rid,
                )
            )
        return response

    @app.teardown_request
    def _unbind_request_id(_: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id.unbind(token)


def _to_file(path: Path, json_lines: bool) -> None:
    """Access lines appended to `path` instead of stderr (every web process appends whole
    lines; WatchedFileHandler reopens the file after logrotate moves it)."""
    if any(getattr(handler, "baseFilename", None) == str(path.absolute()) for handler in log.handlers):
        return  # an app built twice in one process (tests) logs each line once
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    adopt(handler, json_lines)
    log.addHandler(handler)
    log.propagate = False
