"""Journal entries as task messages, both ways: what the bot sends for an entry, and the
entry a worker makes of a message.

    trades.record(trade)                 <->  RecordEntry  {"kind": "record", "trade": {...}}
    trades.update(trade_id, updates)     <->  UpdateEntry  {"kind": "update", "trade_id", "updates"}

The task id is the entry's `job_id`. An entry's JSON is the spool line of `db.entries`, so
an outbox line, a replay line and a dead letter's payload all map the same way; a dead
letter that kept a task call (`{"task", "id", "args", "kwargs"}`) maps back to the entry's
JSON with `entry_json_of_call`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db import TRADE_ID, RecordEntry, TradeRecord, TradeUpdate, UnstorableEntry, UpdateEntry
from tasks.contract.names import RECORD_TASK, UPDATE_TASK

# A record sent by name must say who it is: a default made at each delivery (a new id, the
# time of delivery) would store a redelivered record twice.
REQUIRED_IN_A_RECORD_MESSAGE = ("trade_id", "timestamp")


@dataclass(frozen=True)
class TaskMessage:
    name: str
    args: list[Any]
    trade_id: Any  # what Flower shows of the message (a repr of the record costs too much)


def message_of(entry_json: dict[str, Any]) -> TaskMessage | None:
    """The task message for an entry's JSON, forwarded as it is (the worker validates
    every message); None for a kind no task takes."""
    kind = entry_json.get("kind")
    if kind == "record":
        trade = entry_json.get("trade")
        trade_id = trade.get("trade_id") if isinstance(trade, dict) else None
        return TaskMessage(RECORD_TASK, [trade], trade_id)
    if kind == "update":
        trade_id = entry_json.get("trade_id")
        return TaskMessage(UPDATE_TASK, [trade_id, entry_json.get("updates")], trade_id)
    return None


def record_entry(job_id: str, trade: Any) -> RecordEntry:
    """The entry of a `trades.record` message; raises UnstorableEntry or ValidationError."""
    if isinstance(trade, dict):
        missing = [name for name in REQUIRED_IN_A_RECORD_MESSAGE if trade.get(name) is None]
        if missing:
            raise UnstorableEntry(
                f"a {RECORD_TASK} message must carry {' and '.join(missing)} "
                "(a default made at delivery would double the trade on redelivery)"
            )
    return RecordEntry(TradeRecord.from_dict(trade), job_id)


def update_entry(job_id: str, trade_id: Any, updates: Any) -> UpdateEntry:
    """The entry of a `trades.update` message. One without `updated_at` is ordered by the
    time a worker first handles it."""
    return UpdateEntry(TRADE_ID.validate_python(trade_id), TradeUpdate.from_dict(updates).stamped(), job_id)


# The entry each task builds, and the entry kind it is. Their parameters after `job_id`
# are named as the entry's JSON names them (`trade`; `trade_id`, `updates`).
_BUILDERS: dict[str, tuple[str, Callable[..., Any]]] = {
    RECORD_TASK: ("record", record_entry),
    UPDATE_TASK: ("update", update_entry),
}


def entry_json_of_call(name: Any, job_id: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """The entry JSON (a spool line, unvalidated) of a call of task `name`, bound the way
    its worker binds it: the inverse of `message_of`. Raises UnstorableEntry for a task
    that takes no entry or arguments it does not take."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise UnstorableEntry(f"{name!r} is not a trades task ({RECORD_TASK}, {UPDATE_TASK})")
    kind, build = _BUILDERS[name]
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise UnstorableEntry(f"a {name} call needs a list of args and a dict of kwargs")
    try:
        bound = _signature(build).bind(job_id, *args, **kwargs)
    except TypeError as exc:
        raise UnstorableEntry(f"wrong arguments for {name}: {exc}") from None
    return {"kind": kind, **bound.arguments}


@functools.cache
def _signature(build: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(build)
