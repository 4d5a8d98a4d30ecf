"""`ml.predict`: predictions in workers that keep every model of MODEL_DIR loaded.

The worker's consumer buffers predict messages (celery-batches) for at most
PREDICT_BATCH_WAIT_S or PREDICT_MAX_BATCH messages and runs them in one pool call:
requests for the same model and input shape are stacked into one model call, the way
MLServer and BentoML batch adaptively. Each request still gets its own outcome
(`tasks.worker.outcomes`). Every process that holds the models also serves the web's
waiting callers without Celery's consumer: on their direct connections
(`tasks.worker.direct_server`) and on the direct lane (`tasks.worker.lane_server`). It hands
what it served to the prediction log (`tasks.worker.prediction_log`) once the callers
have their answers.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest

from models import (
    InputMismatch,
    LoadedModel,
    ModelArchive,
    ModelError,
    ModelStore,
    features_array,
    limit_threads,
)
from tasks import app
from tasks.contract import (
    PREDICT_QUEUE,
    PREDICT_TASK,
    Call,
    Outcome,
    PredictionExpired,
    PredictionFailed,
    lane_store_url,
    waits_on_reply,
)
from tasks.internals.celery_batches import run_in_pool
from tasks.observability import metrics, request_id, timeline
from tasks.worker.app import FlaskTask, worker_settings
from tasks.worker.batching import BATCH_DONE
from tasks.worker.direct_server import DirectServer
from tasks.worker.guards import Experiment, GuardTally, judge
from tasks.worker.lane_server import BatchLimits, LaneServer
from tasks.worker.model_registry import LoadReport
from tasks.worker.model_watch import ModelWatch
from tasks.worker.outcomes import mark_started, publish_outcomes
from tasks.worker.prediction_log import PredictionLogWriter, Served
from tasks.worker.releases import CHALLENGER, CHAMPION, ReleaseBook, Route, route
from tasks.worker.shadow import ShadowRunner, ShadowWork

log = logging.getLogger(__name__)

_serves_predictions = False
_store: ModelStore | None = None
_lane: LaneServer | None = None
_direct: list[DirectServer] = []
_watch: ModelWatch | None = None
_prediction_log: PredictionLogWriter | None = None
_releases: ReleaseBook | None = None
_guards = GuardTally()  # what this process's challengers did, added up in Redis every tick
# A shadow challenger's experiment -> the champion answers it runs afterwards
Shadows = dict[Experiment, list[Served]]
_shadow: ShadowRunner | None = None


def store() -> ModelStore:
    global _store
    if _store is None:
        settings = worker_settings()
        _store = ModelStore(
            settings.model_dir,
            allow_pickle=settings.allow_pickle_models,
            archive=ModelArchive(settings.model_archive, keep=settings.model_versions_kept),
            max_extra_versions=settings.model_versions_loaded,
        )
    return _store


def release_book() -> ReleaseBook:
    global _releases
    if _releases is None:
        _releases = ReleaseBook(app.flask_app)
    return _releases


@worker_init.connect
def _note_queues(sender: Any = None, **_: Any) -> None:
    global _serves_predictions
    _serves_predictions = PREDICT_QUEUE in sender.app.amqp.queues.consume_from
    if "prefork" not in sender.pool_cls.__module__:
        # A threads or solo pool never forks: the worker process itself predicts.
        _preload_models()
        _start_prediction_log()
        _start_lane(threads=sender.concurrency)


@worker_process_init.connect
def _load_and_serve(**_: Any) -> None:
    _preload_models()
    _start_prediction_log()
    _start_lane(threads=1)


def _start_prediction_log() -> None:
    global _prediction_log, _shadow
    settings = worker_settings()
    if _serves_predictions and settings.prediction_log and _prediction_log is None:
        _prediction_log = PredictionLogWriter(app.flask_app, settings).start()
        # Shadow runs exist to be compared: without the log there is nothing to run them for.
        _shadow = ShadowRunner(store(), _prediction_log.record, _payload, _guards).start()


def _start_lane(threads: int) -> None:
    global _lane
    lane_url = lane_store_url(app.conf.broker_url, app.conf.result_backend)
    if not _serves_predictions or lane_url is None:
        return
    client = redis.Redis.from_url(lane_url, socket_connect_timeout=2, health_check_interval=30)
    settings = worker_settings()
    timeline.start(settings.predict_timeline_dir, "worker")  # a diagnostic (bench/timeline.py)
    _lane = LaneServer(
        client,
        serve_waiting,
        settings.predict_max_batch,
        settings.predict_batch_wait_s,
        limits_of=batch_limits,
    ).start(threads)
    _start_direct(settings, threads)


def _start_direct(settings: Any, threads: int) -> None:
    """A direct connection's server per lane thread, each on a port of its own, but no
    more than the cores this process may use: the servers of a process share one GIL, and
    more of them than cores only contend for it (measured on 2 cores, a threads pool of 4:
    with 2 servers rather than 4, 23% less worker CPU per prediction and half the p99 at
    32 clients; with the costly LSTM, 27% more predictions a second)."""
    if _direct or settings.predict_direct_bind is None:
        return
    try:
        for number in range(max(1, min(threads, len(os.sched_getaffinity(0))))):
            server = DirectServer(
                app.backend.client,
                serve_waiting,
                settings.predict_direct_bind,
                settings.predict_direct_host,
                max_messages=settings.predict_max_batch,
                limits_of=batch_limits,
                number=number,
            )
            _direct.append(server.start())
    except OSError as exc:  # the Redis lane serves the web all the same
        log.error("direct connection not started on %s: %s", settings.predict_direct_bind, exc)


def batch_limits(model_name: str) -> BatchLimits:
    """A model's batching: its sidecar's `max_batch` and `batch_wait_s`, else the settings'."""
    settings = worker_settings()
    loaded = store().loaded_model(model_name)
    meta = loaded.file.meta if loaded is not None else {}
    return BatchLimits(
        meta.get("max_batch", settings.predict_max_batch),
        meta.get("batch_wait_s", settings.predict_batch_wait_s),
    )


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_lane(**_: Any) -> None:
    if _watch is not None:
        _watch.stop()
    for server in _direct:  # first: the web sends what this process no longer takes elsewhere
        server.stop()
    if _lane is not None:
        _lane.stop()
    if _shadow is not None:
        _shadow.stop()
    if _prediction_log is not None:
        _prediction_log.stop()  # after the lane: what it answered last is logged too
    if _load_report is not None:
        with contextlib.suppress(redis.RedisError):
            _load_report.forget(app.backend.client)


def _preload_models() -> None:
    # After the fork, never before: XGBoost's and LightGBM's OpenMP pools and torch's
    # threads do not survive a fork. One thread per library and process.
    if not _serves_predictions:
        return
    limit_threads()
    started = time.monotonic()
    _let_fresh_files_settle()
    _read_releases()
    outcome = store().preload()
    failed = {name: error for name, error in outcome.items() if error}
    log.info("loaded %d models in %.1fs", len(outcome) - len(failed), time.monotonic() - started)
    for name, error in failed.items():
        log.error("model %s not loaded: %s", name, error)
    _report_new_versions()
    global _watch
    _watch = ModelWatch(store(), _report_new_versions, before_look=_read_releases).start()
    gc.freeze()  # the models and libraries stay: the collector's passes skip them


def _read_releases() -> None:
    """The releases again, and the versions they name held loaded (and kept); then the
    challengers' tally shared and judged against their guards. Runs on every model-watch
    tick: a guard's rollback holds in every worker by their next tick."""
    book = release_book()
    releases = book.refresh()
    store().hold(book.held())
    if not releases:
        return
    try:
        _guards.flush(app.backend.client)
        if judge(app.backend.client, app.flask_app, releases, store().loaded()):
            book.refresh()  # this process routes by the rollback at once
            store().hold(book.held())
    except redis.RedisError as exc:
        log.warning("release guards not judged (next tick tries again): %s", exc)


def _let_fresh_files_settle() -> None:
    # The store does not load a file written in the last settle_s (it may be half
    # written); at start-up, right after `models train-demo`, wait for it instead.
    files = store().list()
    if files:
        newest = max(file.modified.timestamp() for file in files)
        time.sleep(max(0.0, min(store().settle_s, newest + store().settle_s - time.time())))


class PredictBatches(FlaskTask, Batches):
    abstract = True
    ignore_result = True  # outcomes are stored per request by publish_outcomes

    def Strategy(self, task: Batches, app: Any, consumer: Any) -> Any:
        # The batch limits are the app's settings (celery-batches reads both on every message).
        settings = worker_settings(app)
        self.flush_every, self.flush_interval = settings.predict_max_batch, settings.predict_batch_wait_s
        return super().Strategy(task, app, consumer)

    def flush(self, requests: Collection[Request]) -> None:
        now = time.time()
        # A caller that stopped waiting set `expires`: its request is not worth a model call.
        expired = [request for request in requests if _expired(request, now)]
        live = [request for request in requests if not _expired(request, now)]
        if expired:
            error = PredictionExpired("the prediction waited too long for a worker (PREDICT_EXPIRES_S)")
            publish_outcomes(app, [(call, error) for call in batch_calls(expired)])
            for request in expired:
                request.acknowledge()
        if not live:
            return
        simple = [SimpleRequest.from_request(request) for request in live]

        def fail_all(reason: object) -> None:
            log.error("prediction batch of %d messages failed: %r", len(simple), reason)
            error = PredictionFailed("the worker failed while predicting; try again")
            publish_outcomes(app, [(call, error) for call in batch_calls(simple)])

        def on_accepted(*_: Any) -> None:
            for request in live:
                request.acknowledge()

        def on_return(result: Any) -> None:
            if result != BATCH_DONE:
                fail_all("the batch raised; see the error logged before")

        run_in_pool(
            self,
            simple,
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=lambda exc_info: fail_all(exc_info.exception),
        )


def _expired(request: Request, now: float) -> bool:
    return request.expires is not None and request.expires.timestamp() < now


@app.task(name=PREDICT_TASK, base=PredictBatches)
def predict(requests: list[SimpleRequest]) -> str:
    """One message: `model_name, features, model_type=None`; returns the prediction payload."""
    return serve(batch_calls(requests))


def batch_calls(requests: Iterable[Any]) -> list[Call]:
    return [
        Call(
            request.id,
            request.reply_to,
            tuple(request.args),
            dict(request.kwargs),
            request_id=request_id.of_message(request.request_dict),
        )
        for request in requests
    ]


def serve(calls: list[Call]) -> str:
    # Only queued jobs (no caller waiting on a reply key) are polled for "running".
    mark_started(app, [call for call in calls if not waits_on_reply(call)])
    served: list[Served] = []
    shadows: Shadows = defaultdict(list)
    try:
        publish_outcomes(app, run_batch(calls, served, shadows))
    finally:
        metrics.observe_batch_size(len(calls))  # once the callers have their answers
        if _prediction_log is not None and served:
            # Made is logged: a direct caller has its answer even when Redis took no outcome.
            _prediction_log.record(served)
    if _shadow is not None:
        for experiment, champions in shadows.items():
            _shadow.submit(ShadowWork(experiment, champions))
    _report_new_versions()
    timeline.stamp_jobs((call.id for call in calls), "done")
    return BATCH_DONE


def serve_waiting(calls: list[Call]) -> None:
    """Predictions whose callers wait (on a direct connection or the Redis lane): a failure is
    answered too."""
    now = time.time()
    expired = [call for call in calls if call.expires is not None and call.expires < now]
    if expired:
        error = PredictionExpired("the prediction waited too long for a worker (PREDICT_EXPIRES_S)")
        publish_outcomes(app, [(call, error) for call in expired])
        calls = [call for call in calls if call.expires is None or call.expires >= now]
    try:
        serve(calls)
    except redis.RedisError as exc:
        # Direct callers have their answers (`publish_outcomes` sends them first); the
        # Redis lane's callers, waiting on Redis, cannot have any.
        log.warning("outcomes of %d waiting predictions not stored: Redis: %s", len(calls), exc)
    except Exception:
        log.exception("a batch of %d waiting predictions failed", len(calls))
        error = PredictionFailed("the worker failed while predicting; try again")
        publish_outcomes(app, [(call, error) for call in calls])  # a caller answered already is not again


_load_report: LoadReport | None = None


def _report_new_versions() -> None:
    """Tell the web about a model version this process loaded, or a file it could not
    load, since it last reported. Never raises: it runs after the callers were answered,
    and a later call retries."""
    global _load_report
    if _load_report is None:
        _load_report = LoadReport(store())
    try:
        _load_report.report(app.backend.client)
    except redis.RedisError as exc:
        log.warning("could not report the loaded models: %s", exc)


def run_batch(
    requests: list[Call],
    served: list[Served] | None = None,
    shadows: Shadows | None = None,
) -> list[Outcome]:
    """The outcome of every request; what succeeded is added to `served` (for the log),
    and what a shadow challenger should run afterwards to `shadows`."""
    started = time.perf_counter()
    groups: dict[tuple[Any, Any, bool, Route], list[tuple[Call, Any]]] = defaultdict(list)
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            name, features, model_type, explain, version, routing_key = _arguments(
                *request.args, **request.kwargs
            )
        except TypeError as exc:
            message = (
                "ml.predict takes model_name, features, model_type, explain, model_version, routing_key: "
                f"{exc}"
            )
            outcomes.append((request, ModelError(message)))
            continue
        refused = _refused_arguments(explain, version, routing_key)
        if refused is not None:
            outcomes.append((request, refused))
            continue
        groups[(name, model_type, explain, _route(name, version, routing_key))].append((request, features))
    for (name, model_type, explain, target), members in groups.items():
        answered = _run_group(name, model_type, explain, target, members, started, served, shadows)
        _tally_challenger(target, answered, started)
        outcomes.extend(answered)
    return outcomes


def _arguments(
    model_name: Any,
    features: Any,
    model_type: Any = None,
    explain: Any = False,
    model_version: Any = None,
    routing_key: Any = None,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    return model_name, features, model_type, explain, model_version, routing_key


def _refused_arguments(explain: Any, version: Any, routing_key: Any) -> ModelError | None:
    if not isinstance(explain, bool):
        return InputMismatch("explain must be true or false", {"received": explain})
    if version is not None and not isinstance(version, str):
        return InputMismatch("model_version must be a string", {"received": version})
    if routing_key is not None and not isinstance(routing_key, str):
        return InputMismatch("routing_key must be a string", {"received": routing_key})
    return None


def _route(name: Any, version: str | None, routing_key: str | None) -> Route:
    book = release_book()
    if version is None and isinstance(name, str) and book.any():
        # A release is kept under the file name; an unknown name is answered by the model call.
        with contextlib.suppress(ModelError):
            name = store().resolve(name).name
    return route(book.get(name) if isinstance(name, str) else None, str(name), version, routing_key)


def _tally_challenger(target: Route, outcomes: list[Outcome], started: float) -> None:
    """What a canary's challenger did, for its guards."""
    if target.role != CHALLENGER or target.experiment is None:
        return
    answers = [outcome for _, outcome in outcomes if not isinstance(outcome, ModelError)]
    _guards.add(
        target.experiment,
        answered=len(answers),
        failed=len(outcomes) - len(answers),
        nonfinite=sum(None in answer["predictions"] for answer in answers),
        latency_ms=(time.perf_counter() - started) * 1000,
        calls=1 if answers else 0,
    )


def _run_group(
    name: Any,
    model_type: Any,
    explain: bool,
    target: Route,
    members: list[tuple[Call, Any]],
    started: float,
    served: list[Served] | None,
    shadows: Shadows | None,
) -> list[Outcome]:
    try:
        loaded = store().load(name, model_type, version=target.version)
    except ModelError as error:
        return [(request, error) for request, _ in members]

    outcomes: list[Outcome] = []
    stacks: dict[tuple[int, ...], list[tuple[Call, np.ndarray]]] = defaultdict(list)
    for request, features in members:
        try:
            array = features_array(loaded.adapter, features)
        except ModelError as error:
            outcomes.append((request, error))
            continue
        stacks[array.shape[1:]].append((request, array))

    features_of = {id(request): features for request, features in members}
    # A model call takes at most the model's max_batch predictions (from its sidecar).
    most = loaded.file.meta.get("max_batch") or len(members)
    chunks = [
        stack[start : start + most] for stack in stacks.values() for start in range(0, len(stack), most)
    ]
    for stack in chunks:
        inputs = np.concatenate([array for _, array in stack])
        try:
            timeline.stamp_jobs((request.id for request, _ in stack), "stacked")
            predictions = loaded.adapter.predict(inputs)
            contributions = loaded.adapter.contributions(inputs) if explain else None
            timeline.stamp_jobs((request.id for request, _ in stack), "predicted")
        except ModelError as error:
            outcomes.extend((request, error) for request, _ in stack)
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        created_at = datetime.now(UTC)
        start = 0
        for request, array in stack:
            rows = slice(start, start + len(array))
            payload = _payload(
                request,
                loaded,
                predictions[rows],
                None if contributions is None else contributions[rows],
                target.role,
            )
            outcomes.append((request, payload))
            entry = Served(
                request,
                created_at,
                loaded.file.name,
                loaded.file.version,
                loaded.file.type,
                features_of[id(request)],
                len(array),
                payload,
                latency_ms,
                role=target.role,
            )
            if served is not None:
                served.append(entry)
            shadow = target.shadow
            if shadows is not None and shadow is not None and shadow.challenger != loaded.file.version:
                shadows[shadow].append(entry)
            start += len(array)
    return outcomes


def _json_numbers(values: np.ndarray) -> list:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, None).tolist()  # JSON has no NaN


def _payload(
    call: Call,
    loaded: LoadedModel,
    predictions: np.ndarray,
    contributions: np.ndarray | None,
    role: str = CHAMPION,
) -> dict[str, Any]:
    payload = {
        "predictions": _json_numbers(predictions),
        "model_name": loaded.file.name,
        "model_type": loaded.file.type,
        "model_version": loaded.file.version,
        "role": role,
        "prediction_id": call.id,  # the job's id: GET /api/v1/ml/predictions/<prediction_id>
    }
    if contributions is not None:
        payload["contributions"] = _json_numbers(contributions)
    return payload
