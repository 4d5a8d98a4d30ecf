"""What the predict workers have loaded, for the web (which never loads a model itself).

Each pool process, after loading, records every model's description under its version
in one Redis hash; the web shows a model's details when the version on disk has been
loaded by some worker.
"""

from __future__ import annotations

import json
import time

import redis

from models import ModelStore
from tasks.contract import LOADED_MODELS_KEY


def report_loaded(client: redis.Redis, store: ModelStore) -> None:
    entries = {}
    for name, version in store.loaded().items():
        description = store.load(name).describe()
        entries[f"{name}@{version}"] = json.dumps({**description, "reported_at": time.time()})
    if entries:
        client.hset(LOADED_MODELS_KEY, mapping=entries)
