"""The optional sidecar `<model file>.meta.json`: facts a model file may not carry itself.

Keys (all optional): `type`, `feature_names`, `n_features`, `description`,
`sequence_length` (the length a sequence model was trained on),
`fixed_sequence_length` (true when inputs must have exactly that length), and this
model's batching, in place of PREDICT_MAX_BATCH and PREDICT_BATCH_WAIT_S: `max_batch`
(predictions one model call takes at most) and `batch_wait_s` (how long queueing callers
wait for company), and `decision_threshold` (the value at or above which an output means
"take the trade": a release's comparison judges agreement at it; 0.5 when unset). A
sidecar is a convenience, so a broken one is ignored with a warning
and never makes its model unusable.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from models.base import normalize_type
from models.formats import SIDECAR_SUFFIX

log = logging.getLogger(__name__)

MAX_SIDECAR_BYTES = 1_048_576
MAX_BATCH_WAIT_S = 1.0  # a caller waiting longer for company than for its answer is misconfigured


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar at `path`, validated; {} when absent or unusable."""
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
        raw = json.loads(path.read_bytes())
        return parse_sidecar(raw)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:
        log.warning("sidecar %s ignored: %s", path.name, exc)
        return {}


def parse_sidecar(raw: Any) -> dict[str, Any]:
    """The known keys of a parsed sidecar; ValueError/TypeError if any is of the wrong type."""
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    meta: dict[str, Any] = {}
    if raw.get("type") is not None:
        if not isinstance(raw["type"], str):
            raise TypeError("type must be a string")
        meta["type"] = normalize_type(raw["type"])
    if raw.get("feature_names") is not None:
        names = raw["feature_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise TypeError("feature_names must be a non-empty list of strings")
        meta["feature_names"] = names
    for key in ("n_features", "sequence_length", "max_batch"):
        if raw.get(key) is not None:
            meta[key] = _positive_int(raw[key], key)
    if raw.get("batch_wait_s") is not None:
        wait = raw["batch_wait_s"]
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_BATCH_WAIT_S:
            raise TypeError(f"batch_wait_s must be a number of seconds from 0 to {MAX_BATCH_WAIT_S}")
        meta["batch_wait_s"] = float(wait)
    if raw.get("decision_threshold") is not None:
        threshold = raw["decision_threshold"]
        number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
        if not number or not math.isfinite(threshold):
            raise TypeError("decision_threshold must be a finite number")
        meta["decision_threshold"] = float(threshold)
    if raw.get("description") is not None:
        if not isinstance(raw["description"], str):
            raise TypeError("description must be a string")
        meta["description"] = raw["description"]
    if raw.get("fixed_sequence_length") is not None:
        if not isinstance(raw["fixed_sequence_length"], bool):
            raise TypeError("fixed_sequence_length must be true or false")
        meta["fixed_sequence_length"] = raw["fixed_sequence_length"]
    if "n_features" in meta and "feature_names" in meta and meta["n_features"] != len(meta["feature_names"]):
        raise ValueError(
            f"n_features is {meta['n_features']} but feature_names has {len(meta['feature_names'])} names"
        )
    return meta


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"{key} must be a positive integer")
    return value
