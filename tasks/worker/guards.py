"""A release's guards: a challenger that fails, answers non-finite values or runs slow past
the limits its release sets is rolled back on its own, and the history says why.

Each predict process tallies what its challengers did (canary answers and shadow runs
alike) and adds the tally to one Redis hash per experiment on every model-watch tick, so
the judgement is over every worker's traffic. Every process then judges the experiments
it knows of; the rollback is conditional on the release still naming that challenger
since that moment, so of several processes judging at once one rolls back and the others
change nothing. A new experiment (another challenger, or the same one set again) starts
from an empty tally.

p99 latency is judged at the resolution of LATENCY_BOUNDS_MS: the limit is passed when
more than 1 % of the model calls took longer than the first bound at or above it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from flask import Flask

from db import Release, ReleaseRefused, database
from db import releases as stored
from tasks.contract import GUARD_PREFIX

log = logging.getLogger(__name__)

LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
KEEP_S = 7 * 86400
WHO = "guard"


class Experiment(NamedTuple):
    """A challenger as set at one moment: its tally and its guards' judgement are its own."""

    model_name: str
    challenger: str
    since: float  # when it was set (epoch seconds)


def experiment_of(release: Release) -> Experiment | None:
    if release.challenger is None:
        return None
    since = release.challenger_since.timestamp() if release.challenger_since is not None else 0.0
    return Experiment(release.model_name, release.challenger, since)


def tally_key(experiment: Experiment) -> str:
    return f"{GUARD_PREFIX}{experiment.model_name}@{experiment.challenger}@{experiment.since:.6f}"


class GuardTally:
    """What this process's challengers did since the last flush."""

    def __init__(self) -> None:
        self._counts: dict[Experiment, Counter[str]] = {}
        self._lock = threading.Lock()

    def add(self, experiment: Experiment, *, failed: int = 0, nonfinite: int = 0, answered: int = 0,
            latency_ms: float | None = None, calls: int = 0) -> None:  # fmt: skip
        with self._lock:
            counts = self._counts.setdefault(experiment, Counter())
            counts["answered"] += answered
            counts["failed"] += failed
            counts["nonfinite"] += nonfinite
            if latency_ms is not None and calls:
                counts["calls"] += calls
                counts[f"slower_than:{_bound_below(latency_ms)}"] += calls

    def flush(self, client: redis.Redis) -> None:
        """Add the tally to the shared hashes (raises redis.RedisError: the next tick retries)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            pipeline = client.pipeline(transaction=False)
            for experiment, counter in counts.items():
                key = tally_key(experiment)
                for field, value in counter.items():
                    if value:
                        pipeline.hincrby(key, field, value)
                pipeline.expire(key, KEEP_S)
            pipeline.execute()
        except redis.RedisError:
            with self._lock:  # kept for the next tick, added to what came meanwhile
                for experiment, counter in counts.items():
                    self._counts.setdefault(experiment, Counter()).update(counter)
            raise


def _bound_below(latency_ms: float) -> int:
    """The largest bound the latency passed (0: under the first)."""
    passed = [bound for bound in LATENCY_BOUNDS_MS if latency_ms > bound]
    return passed[-1] if passed else 0


def verdict(guards: dict[str, Any], shared: dict[str, int]) -> str | None:
    """Why the challenger must go, or None. `shared` is the experiment's hash."""
    answered, failed = shared.get("answered", 0), shared.get("failed", 0)
    seen = answered + failed
    if seen < guards.get("min_predictions", 100):
        return None
    limit = guards.get("max_error_rate")
    if limit is not None and failed / seen > limit:
        return f"error rate {failed / seen:.3f} > {limit} over {seen} predictions"
    limit = guards.get("max_nonfinite_rate")
    nonfinite = shared.get("nonfinite", 0)
    if limit is not None and answered and nonfinite / answered > limit:
        return f"non-finite outputs {nonfinite / answered:.3f} > {limit} over {answered} answers"
    limit = guards.get("max_p99_ms")
    calls = shared.get("calls", 0)
    if limit is not None and calls:
        # The share of calls slower than the first bound at or above the limit.
        bound = next((b for b in LATENCY_BOUNDS_MS if b >= limit), LATENCY_BOUNDS_MS[-1])
        slower = sum(count for field, count in shared.items() if _slower_than(field) >= bound)
        if slower / calls > 0.01:
            return f"p99 latency above {bound} ms ({slower} of {calls} model calls) > {limit} ms"
    return None


def _slower_than(field: str) -> int:
    prefix, _, bound = field.partition(":")
    return int(bound) if prefix == "slower_than" else -1


def judge(
    client: redis.Redis, flask_app: Flask, releases: dict[str, Release], file_versions: dict[str, str]
) -> list[str]:
    """Roll back every challenger past its guards; returns the names rolled back.
    `file_versions`: name -> the file's current version (the champion, unless pinned)."""
    rolled = []
    for release in releases.values():
        experiment = experiment_of(release)
        if experiment is None or not release.guards:
            continue
        raw = client.hgetall(tally_key(experiment))
        reason = verdict(release.guards, {key.decode(): int(value) for key, value in raw.items()})
        if reason is not None and _roll_back(
            flask_app, release, reason, file_versions.get(release.model_name)
        ):
            rolled.append(release.model_name)
    return rolled


def _roll_back(flask_app: Flask, release: Release, reason: str, file_version: str | None) -> bool:
    with flask_app.app_context():
        try:
            stored.rollback(
                database.session,
                release.model_name,
                file_version=file_version,
                who=WHO,
                reason=f"{release.mode} {release.challenger}: {reason}",
                now=datetime.now(UTC),
                action="guard",
                expected=(release.challenger, release.challenger_since),
            )
        except ReleaseRefused:
            return False  # another process rolled it back first, or the release changed
        finally:
            database.session.remove()
    log.warning(
        "model %s: challenger %s rolled back by its guards: %s",
        release.model_name,
        release.challenger,
        reason,
    )
    return True
