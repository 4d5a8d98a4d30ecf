"""What the predict workers have loaded, for the web (which never loads a model itself).

Each pool process, after loading, records every model's description under its version
in one Redis hash; the web shows a model's details when the version on disk has been
loaded by some worker.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from models.store import ModelStore

KEY = "ml:loaded-models"


def report_loaded(client: redis.Redis, store: ModelStore) -> None:
    entries = {}
    for name, version in store.loaded().items():
        description = store.load(name).describe()
        entries[f"{name}@{version}"] = json.dumps({**description, "reported_at": time.time()})
    if entries:
        client.hset(KEY, mapping=entries)


def loaded_descriptions(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """`name@version` -> description, as reported by the workers."""
    return {key.decode(): json.loads(value) for key, value in client.hgetall(KEY).items()}
