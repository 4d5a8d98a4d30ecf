"""`/healthz` (the process answers) and `/readyz` (the stack can serve), both without a token.

Readiness checks the database, the broker (Redis or RabbitMQ), a live worker consuming each queue, the
models loaded by the predict workers, and that no trades worker holds trades it can
store nowhere (neither the database nor its spool takes them). It also shows where
beat's upkeep stands (`maintenance`: the kept statistics, the columnstore, the
prediction log's retention), which never makes the stack unready. The checks run side by
side with short timeouts,
so a dependency that is down or silent answers 503 within about two seconds, and the
report is kept for a second so that a scrape storm costs the dependencies little.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from config import Settings
from db import Ages, maintenance
from models import ModelArchive, ModelStore
from tasks.web_clients import BrokerDown, BrokerQueues, ModelReports, WorkerStatus, held_reports
from web.model_states import models_check
from web.model_versions import pins
from web.openapi import responses as r
from web.openapi.declare import Answer, documented
from web.settings import current_settings

blueprint = Blueprint("health", __name__)

CONNECT_TIMEOUT_S = 1.0
# psycopg2's connect_timeout counts whole seconds, and libpq treats 1 as 2.
DATABASE_CONNECT_TIMEOUT_S = 2
DEADLINE_S = 2.5
REPORT_MAX_AGE_S = 1.0
# Shown in /readyz, never a reason to be unready: beat's upkeep lagging slows reads (they
# fold what waits themselves), it does not make the stack unable to serve.
ADVISORY = frozenset({"maintenance"})

Check = dict[str, Any]


@blueprint.get("/healthz")
@documented(
    operation_id="liveness",
    summary="Liveness",
    tag="operations",
    answers={200: Answer("the process answers", r.Liveness)},
    description="Touches no dependency.",
)
def healthz():
    return jsonify(status="ok")


@blueprint.get("/readyz")
@documented(
    operation_id="readiness",
    summary="Readiness",
    tag="operations",
    answers={
        200: Answer("database, broker, workers and models ready", r.Readiness),
        503: Answer("not ready; `checks` says which part failed", r.Readiness),
    },
)
def readyz():
    checks = readiness().report()
    ready = all(check["ok"] for name, check in checks.items() if name not in ADVISORY)
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def readiness() -> Readiness:
    """This process's readiness checks (the dashboard shows the same report)."""
    found = current_app.extensions.get("readiness")
    if found is None:
        store, archive = current_app.extensions["model_store"], current_app.extensions["model_archive"]
        found = current_app.extensions["readiness"] = Readiness(store, archive, current_settings())
    return found


class Readiness:
    def __init__(self, store: ModelStore, archive: ModelArchive, settings: Settings):
        self._store = store
        self._archive = archive
        # A connection per check: a pooled one to a silent server could hang a probe.
        self._engine = create_engine(
            settings.database_url,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": DATABASE_CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={int(DEADLINE_S * 1000)}",
            },
        )
        self._ages = Ages.of(settings)
        self._staleness_s = settings.stats_max_staleness_s
        timeouts = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": CONNECT_TIMEOUT_S}
        self._broker = BrokerQueues(
            settings.celery_broker_url, settings.celery_result_backend, timeout_s=CONNECT_TIMEOUT_S
        )
        self._results = redis.Redis.from_url(settings.celery_result_backend, **timeouts)
        self._workers = WorkerStatus(settings.celery_broker_url, timeout_s=CONNECT_TIMEOUT_S)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")
        self._lock = threading.Lock()
        self._report: tuple[float, dict[str, Check]] | None = None

    def report(self) -> dict[str, Check]:
        with self._lock:
            if self._report is None or time.monotonic() - self._report[0] > REPORT_MAX_AGE_S:
                self._report = (time.monotonic(), self._run_checks())
            return self._report[1]

    def _run_checks(self) -> dict[str, Check]:
        checks: dict[str, Callable[[], Check]] = {
            "database": self._database,
            "broker": self._broker_answers,
            "workers": self._live_workers,
            "models": self._loaded_models,
            "journal": self._journal,
            "maintenance": self._maintenance,
        }
        futures = {name: self._executor.submit(_guarded, check) for name, check in checks.items()}
        deadline = time.monotonic() + DEADLINE_S
        report = {}
        for name, future in futures.items():
            try:
                report[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                report[name] = {"ok": False, "error": f"no answer within {DEADLINE_S:g}s"}
        return report

    def queued(self) -> Check:
        """Messages waiting in each queue (and the prediction lane), read now: the dashboard's."""
        try:
            depths = self._broker.depths()
        except BrokerDown as exc:
            error = f"the broker at {self._broker.where} does not answer: {_first_line(exc)}"
            return {"ok": False, "depths": {}, "error": error}
        return {"ok": True, "depths": depths}

    def _database(self) -> Check:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return {"ok": False, "error": f"the database does not answer: {_first_line(exc)}"}
        return {"ok": True}

    def _maintenance(self) -> Check:
        with Session(self._engine) as session:
            now = session.scalar(select(func.now()))
            parts = maintenance.status(session, now, self._ages, self._staleness_s)
        return {"ok": all(part["ok"] for part in parts.values()), **parts}

    def _broker_answers(self) -> Check:
        try:
            disagreeing = self._broker.disagreements()
        except BrokerDown as exc:
            error = f"the broker at {self._broker.where} does not answer: {_first_line(exc)}"
            return {"ok": False, "error": error}
        if disagreeing:
            # RabbitMQ refuses the workers' declaration of these queues: what waits there is stranded.
            error = " ".join(found.describe() for found in disagreeing)
            return {"ok": False, "error": error, "disagreeing": [found.as_dict() for found in disagreeing]}
        return {"ok": True}

    def _live_workers(self) -> Check:
        consumers = self._workers.consumers()
        ok = consumers.error is None and not consumers.idle_queues
        check: Check = {"ok": ok, "queues": consumers.queues}
        if consumers.error is not None:
            check["error"] = _first_line(consumers.error)
        elif consumers.idle_queues:
            check["error"] = f"no live worker consumes {', '.join(consumers.idle_queues)}"
        return check

    def _loaded_models(self) -> Check:
        """Every model file has a version loaded by a predict worker (the one on disk, or the
        previous one while the new one loads or does not load); see `web.model_states`."""
        try:
            reports = ModelReports.read(self._results)
        except redis.RedisError as exc:
            error = f"the result backend does not answer: {_first_line(exc)}"
            return {"ok": False, "loaded": [], "error": error}
        with Session(self._engine) as session:
            pinned = pins(session, self._archive)
        return models_check(self._store, reports, pinned)

    def _journal(self) -> Check:
        try:
            held = held_reports(self._results)
        except redis.RedisError as exc:
            return {
                "ok": False,
                "held": None,
                "error": f"the result backend does not answer: {_first_line(exc)}",
            }
        total = sum(held.values())
        check: Check = {"ok": total == 0, "held": total}
        if total:
            check["workers"] = held
            check["error"] = (
                f"{total} trades wait in the workers, unacknowledged: neither the database nor the "
                "spool takes them"
            )
        return check


def _guarded(check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a probe answers with what failed, never a 500
        return {"ok": False, "error": f"{type(exc).__name__}: {_first_line(exc)}"}


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
