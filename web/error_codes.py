"""Every `code` the API's JSON errors carry, `{"error": {"code", "message", "details"}}`:
its HTTP statuses, what it means and what its `details` hold.

Codes are raised where their failure is found: `ApiError(status, code, ...)` in the views,
a `models.ModelError` subclass (its class line names status and code), the error handlers
of `web.errors`, or werkzeug's own exceptions (their name in snake case). This catalogue
is what the error reference (docs/reference/errors.md) is generated from, and
tests/test_docs_reference.py fails when a code is raised anywhere that it does not list,
or with a status it does not give. On /v2 paths the same failures answer in the
protocol's shape instead, `{"error": "<message>"}` (`web.v2.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    statuses: tuple[int, ...]
    meaning: str
    details: str = ""  # what `details` holds, when the error carries any


ERROR_CODES: dict[str, ErrorCode] = {
    # -- the request itself -------------------------------------------------------------
    "malformed_json": ErrorCode(
        (400,),
        "The body is not a JSON document, or is nested deeper than the parser goes (about 1,000 levels).",
    ),
    "invalid_query": ErrorCode((400,), "A query parameter given twice."),
    "invalid_input": ErrorCode(
        (400, 422),
        "422: valid JSON of the wrong shape for the route; 400: a bad query string or path parameter "
        "(`trade_id`, `prediction_id`).",
        "one entry per problem: `field` (its path, e.g. `amount`; `body` for the whole body) and `message`",
    ),
    "invalid_header": ErrorCode((400,), "`X-Routing-Key` longer than it may be."),
    "invalid_tensor": ErrorCode(
        (400,),
        "A V2 inference request the protocol cannot serve: a bad tensor, datatype or shape, several "
        "inputs, an unknown output, or the binary data extension.",
    ),
    "bad_request": ErrorCode(
        (400,),
        "werkzeug's own `BadRequest`: a request the framework refuses before the app's checks see it "
        "(no route of this app is known to raise it).",
    ),
    "unauthorized": ErrorCode(
        (401,),
        "A missing or wrong bearer token (only when `API_TOKEN` is set), or a dashboard panel asked for "
        "without logging in.",
    ),
    "not_found": ErrorCode((404,), "An unknown route, or a trade that is not in the journal."),
    "method_not_allowed": ErrorCode((405,), "A method the path does not serve; `Allow` lists those it does."),
    "request_entity_too_large": ErrorCode((413,), "A body larger than `MAX_REQUEST_BYTES`."),
    # -- models and predictions ---------------------------------------------------------
    "model_not_found": ErrorCode(
        (404,),
        "No model file of that name in `MODEL_DIR` (for a model's performance: neither `MODEL_DIR`, the "
        "prediction log nor the trades know the name).",
    ),
    "invalid_model_name": ErrorCode(
        (400,), "A model name that is not a plain file name (a path, a traversal, a bad character)."
    ),
    "version_not_found": ErrorCode(
        (404,), "A model version that is not kept (not the file's, not in the archive).", "`model_version`"
    ),
    "model_type_mismatch": ErrorCode((422,), "The request names a model type the file is not."),
    "input_mismatch": ErrorCode(
        (422,),
        "Rows of the wrong shape or type for the model (its feature count), or arguments of the wrong "
        "kind (`explain`, `model_version`).",
        "`expected` and `received` (and `at`, where in the input), or `received` alone for an argument",
    ),
    "model_refused": ErrorCode(
        (422,), "A file the store will not load: a pickle without `ALLOW_PICKLE_MODELS`, an unknown format."
    ),
    "model_unloadable": ErrorCode((422,), "A file its library cannot load."),
    "explanation_unsupported": ErrorCode(
        (422,),
        "`explain` asked of a model that cannot give contributions (not a tree model: the LSTM).",
        "`type` and `supported_types`",
    ),
    "model_loading": ErrorCode(
        (503,),
        "The file is there but not loaded yet (a file just copied in, or a kept version being loaded); "
        "`Retry-After` says when to ask again.",
        "`retry_after_s`",
    ),
    "model_not_ready": ErrorCode(
        (400,),
        "V2 model readiness: no predict worker has loaded the model (the protocol: any 4xx is not ready).",
    ),
    "job_not_found": ErrorCode((404,), "A prediction job id never issued here, or expired."),
    "prediction_not_found": ErrorCode((404,), "A prediction id that is not in the prediction log."),
    "prediction_timeout": ErrorCode(
        (504,),
        "No answer within `PREDICT_TIMEOUT_S`; the job goes on.",
        "`job_id` and `status_url`, where to poll it",
    ),
    "prediction_expired": ErrorCode(
        (504,), "The prediction waited longer than `PREDICT_EXPIRES_S` for a worker, and was dropped."
    ),
    "prediction_failed": ErrorCode(
        (503,), "The worker failed while predicting, or its answer cannot be read; see the worker's log."
    ),
    "model_error": ErrorCode(
        (500,),
        "A prediction message whose arguments the worker cannot read: only from a bot's own `send_task` "
        "(the web checks a request before it sends it).",
    ),
    # -- releases -----------------------------------------------------------------------
    "no_challenger": ErrorCode(
        (400, 409),
        "409: a promotion with no challenger set; 400: a comparison with no challenger named and none set.",
    ),
    "challenger_not_loaded": ErrorCode(
        (409,),
        "A promotion while the challenger is not loaded on every live predict worker (or none answers).",
        "`lacking` (the live workers without it) and `live`",
    ),
    "nothing_to_change": ErrorCode((409,), "A rollback with neither a challenger nor an earlier champion."),
    # -- dependencies -------------------------------------------------------------------
    "database_unavailable": ErrorCode(
        (503,),
        "A read while the database is down, silent, read-only or mid-migration (writes still queue); "
        "with `Retry-After`.",
    ),
    "database_timeout": ErrorCode(
        (504,), "A read that outlived `WEB_STATEMENT_TIMEOUT_S`; with `Retry-After`."
    ),
    "stats_catching_up": ErrorCode(
        (503,),
        "The kept statistics have a backlog of the journal's changes longer to fold than a read may "
        "wait; with `Retry-After`.",
        "`behind_s`",
    ),
    "journal_unavailable": ErrorCode(
        (503,), "A trade write that neither the broker nor the web's outbox takes; with `Retry-After`."
    ),
    "broker_unavailable": ErrorCode(
        (503,),
        "The broker or the results' Redis does not answer, goes silent or refuses writes (`maxmemory`, "
        "`NOREPLICAS`, a read-only replica); with `Retry-After`.",
    ),
    "internal_error": ErrorCode(
        (500,), "A bug: no input is meant to yield it. The server's log has the traceback."
    ),
}
