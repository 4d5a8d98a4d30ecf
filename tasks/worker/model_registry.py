"""What the predict workers have loaded, for the web (which never loads a model itself).

Each pool process, after loading, records every model's description under its version
in one Redis hash, and every file that did not load (with why) in another; the web shows
a model's details when the version on disk has been loaded by some worker, and a load
error beside the version that still serves.

Each name is reported from what the process holds (`loaded_model`), never by looking at
the file again: a file that stopped loading must not keep the other names, or the last
good version of its own, from being reported. Versions held beside a file's current one
(a release's, or one asked for) are described in a hash of their own, so the web never
takes a challenger for the version a name's file answers at.

Each process also renews, every few seconds, the list of every version it holds under a
key of its own that expires: the live predict processes, for a promotion's check that
every one of them holds the challenger.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import redis

from models import ModelError, ModelStore
from tasks.contract import LOADED_MODELS_KEY, LOADED_VERSIONS_KEY, MODEL_FAILURES_KEY, WORKER_MODELS_PREFIX
from tasks.observability import metrics

Failures = dict[str, ModelError]  # name@version -> why it did not load

HELD_RENEW_S = 2.0  # how often a process renews its list of held versions
HELD_TTL_S = 10  # a process silent this long (dead, or cut off) is no longer live


class LoadReport:
    """Reports this process's models when they change; counts each failed version once."""

    def __init__(self, store: ModelStore):
        self._store = store
        self._reported: tuple[dict[str, str], set[str], set[str]] | None = None
        self._counted: set[str] = set()
        self._lock = threading.Lock()
        self._held_key = f"{WORKER_MODELS_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self._held: tuple[float, list[str]] | None = None

    def report(self, client: redis.Redis) -> None:
        """Write what changed since the last report (raises redis.RedisError; the next call
        retries). A report already under way in another thread makes this one a no-op: the
        model watch reports again within seconds."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._report(client)
        finally:
            self._lock.release()

    def _report(self, client: redis.Redis) -> None:
        loaded = self._store.loaded()
        failures = {f"{name}@{version}": error for name, (version, error) in self._store.failures().items()}
        self._count(failures)
        held = self._store.loaded_versions()
        self._renew_held(client, held)
        if self._reported == (loaded, set(failures), set(held)):
            return
        now = time.time()
        entries = {}
        for name in loaded:
            model = self._store.loaded_model(name)
            if model is not None:  # not dropped meanwhile
                description = {**model.describe(), "reported_at": now}
                entries[f"{name}@{model.file.version}"] = json.dumps(description)
        beside = {
            key: json.dumps({**model.describe(), "reported_at": now})
            for key, model in held.items()
            if key not in entries
        }
        failed = {
            key: json.dumps(
                {
                    "code": error.code,
                    "error": error.message,
                    "serving": loaded.get(key.rpartition("@")[0]),  # the version kept, if any
                    "reported_at": now,
                }
            )
            for key, error in failures.items()
        }
        cleared = self._reported[1] - set(failures) if self._reported else set()
        pipeline = client.pipeline(transaction=False)
        if entries:
            pipeline.hset(LOADED_MODELS_KEY, mapping=entries)
        if beside:
            pipeline.hset(LOADED_VERSIONS_KEY, mapping=beside)
        if failed:
            pipeline.hset(MODEL_FAILURES_KEY, mapping=failed)
        if cleared:
            pipeline.hdel(MODEL_FAILURES_KEY, *cleared)
        pipeline.execute()
        self._reported = (loaded, set(failures), set(held))

    def _renew_held(self, client: redis.Redis, held: dict) -> None:
        versions = sorted(held)
        now = time.monotonic()
        if self._held is not None and self._held[1] == versions and now - self._held[0] < HELD_RENEW_S:
            return
        client.set(self._held_key, json.dumps(versions), ex=HELD_TTL_S)
        self._held = (now, versions)

    def forget(self, client: redis.Redis) -> None:
        """This process stops serving: it is no longer a live predict process."""
        client.delete(self._held_key)

    def _count(self, failures: Failures) -> None:
        for key, error in failures.items():
            if key not in self._counted:
                self._counted.add(key)
                metrics.MODEL_LOAD_FAILURES.labels(key.rpartition("@")[0], error.code).inc()
