"""What the predict workers report they have loaded (`tasks.worker.model_registry`)."""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks.contract import LOADED_MODELS_KEY


def loaded_descriptions(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """`name@version` -> description, as reported by the workers."""
    return {key.decode(): json.loads(value) for key, value in client.hgetall(LOADED_MODELS_KEY).items()}
