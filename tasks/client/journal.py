"""The bot-side client of the trade journal.

    from tasks.client import TradeJournal
    journal = TradeJournal()                      # CELERY_BROKER_URL, SPOOL_DIR
    sent = journal.record_trade({"symbol": "BTC/USDT", "side": "buy", "amount": 0.1, "entry_price": 42000})
    journal.update_trade(sent.trade_id, closed=True, exit_price=43000, realized_pnl=100)

Records are validated here (a bad one raises `pydantic.ValidationError` in the bot, where
it can be fixed) and sent as the `trades.record` / `trades.update` tasks. When the broker
cannot take them (down, or refusing writes) they are appended to the local outbox
(`SPOOL_DIR/outbox`) and the call returns; the outbox is sent, in order, before the next
message once the broker answers, and a background thread keeps trying every
`retry_interval_s` in the meantime. Only when the outbox's disk refuses too does a call
raise (`JournalUnavailable`): the trade was journaled nowhere.

Every update is stamped with `updated_at` (the bot's clock, strictly increasing in this
process) unless the bot gives one, so the journal applies the newest change of each
field whatever order the messages arrive in.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from config import get_settings
from db import TRADE_ID, Entry, RecordEntry, Spool, TradeRecord, TradeUpdate, UpdateEntry, utc_now
from tasks.contract import (
    BROKER_DOWN,
    OUTBOX_SPOOL,
    TRADES_QUEUE,
    LeanPublisher,
    brief,
    client_app,
    message_of,
)
from tasks.observability import metrics

log = logging.getLogger(__name__)


class JournalUnavailable(Exception):
    """Neither the broker nor the local outbox took the entry: it was journaled nowhere."""


@dataclass(frozen=True)
class Enqueued:
    trade_id: str
    job_id: str
    spooled: bool  # True: kept in the local outbox until the broker answers


class TradeJournal:
    def __init__(
        self,
        broker_url: str | None = None,
        spool_dir: Path | str | None = None,
        *,
        retry_interval_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ):
        broker_url = broker_url or get_settings().celery_broker_url
        self._celery = client_app(
            "trade-journal-client",
            broker_url,
            timeout_s=connect_timeout_s,
            socket_timeout_s=max(connect_timeout_s, 5.0),
        )
        self._connection = self._celery.connection_for_write(broker_url)
        self._publisher = LeanPublisher(
            self._celery, self._connection, confirm_timeout_s=max(connect_timeout_s, 5.0)
        )
        self._outbox = Spool(Path(spool_dir or get_settings().spool_dir) / OUTBOX_SPOOL)
        self._retry_interval_s = retry_interval_s
        self._failed_at: float | None = None
        self._order_lock = threading.RLock()
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        self._backlog = self._outbox.waiting() > 0
        self._last_stamp: datetime | None = None
        if self._backlog:
            self._start_flusher()

    # -- the bot's API --------------------------------------------------------------

    def record_trade(self, record: TradeRecord | Mapping[str, Any]) -> Enqueued:
        """Journal a trade; returns at once, whether sent or kept in the outbox."""
        return self.send(RecordEntry(TradeRecord.from_dict(record)))

    def update_trade(self, trade_id: str, **updates: Any) -> Enqueued:
        """Journal a change to a trade (close, exit_price, realized_pnl, fees, won, ...).

        `updated_at` (when the change happened) defaults to now; where two changes of a
        field meet, the newer one wins, whatever order they reach the journal in.
        """
        return self.send(UpdateEntry(TRADE_ID.validate_python(trade_id), TradeUpdate.from_dict(updates)))

    def send(self, entry: Entry) -> Enqueued:
        """Journal an entry as it is (an import's, validated by building it): its own
        `job_id` is the message's id, so sending the same entry again is the same message,
        and an update keeps its `updated_at`. An entry without a job id gets a new one, an
        update without `updated_at` is stamped now."""
        if entry.job_id is None:
            entry = dataclasses.replace(entry, job_id=_new_job_id())
        if isinstance(entry, UpdateEntry) and entry.update.updated_at is None:
            with self._order_lock:
                entry = dataclasses.replace(entry, update=entry.update.stamped(self._next_stamp()))
        return self._send(entry)

    def flush(self) -> bool:
        """Send what the outbox holds; True when it is empty afterwards."""
        with self._order_lock:
            try:
                report = self._outbox.drain(self._publish_spooled, chunk_size=100)
            except BROKER_DOWN as exc:
                self._failed_at = time.monotonic()
                log.info("broker still unavailable (%s); the outbox keeps its entries", brief(exc))
                return False
            if report is None:
                return False  # another process is sending it right now
            self._failed_at = None
            self._backlog = self._outbox.waiting() > 0
            return not self._backlog

    @property
    def waiting(self) -> int:
        """Entries in the outbox, not yet handed to the broker."""
        return self._outbox.waiting()

    def close(self) -> None:
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(timeout=self._retry_interval_s + 5)
        self._publisher.close()
        self._connection.release()
        self._celery.close()

    def __enter__(self) -> TradeJournal:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------

    def _next_stamp(self) -> datetime:
        # Two updates of one bot process never share a stamp, even within a microsecond.
        now = utc_now()
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _send(self, entry: Entry) -> Enqueued:
        with self._order_lock:
            if self._may_publish():
                try:
                    self._publish_json(entry.to_json())
                    self._failed_at = None
                    return Enqueued(entry.trade_id, entry.job_id, spooled=False)
                except BROKER_DOWN as exc:
                    self._failed_at = time.monotonic()
                    log.warning("broker unavailable (%s): %s kept in the outbox", brief(exc), entry.job_id)
            try:
                self._outbox.append([entry.to_json()])
            except OSError as exc:
                raise JournalUnavailable(
                    f"the broker is unavailable and the outbox ({self._outbox.directory}) refused "
                    f"the entry: {exc}; trade {entry.trade_id} was not journaled"
                ) from exc
            metrics.OUTBOX_SPOOLED.inc()
            self._backlog = True
        self._start_flusher()
        return Enqueued(entry.trade_id, entry.job_id, spooled=True)

    def _may_publish(self) -> bool:
        # Anything already in the outbox goes first, so the broker sees bot order; and
        # right after a failure the bot is not made to wait for another one.
        if not self._backlog:
            return True
        recently_failed = self._failed_at is not None and (
            time.monotonic() - self._failed_at < self._retry_interval_s
        )
        return not recently_failed and self.flush()

    def _publish_spooled(self, chunk: list[dict[str, Any]]) -> None:
        for item in chunk:
            self._publish_json(item)
        metrics.OUTBOX_SENT.inc(len(chunk))

    def _publish_json(self, item: dict[str, Any]) -> None:
        message = message_of(item)
        if message is None:
            log.error("outbox entry of unknown kind skipped: %r", item)
            return
        argsrepr = f"(trade_id={message.trade_id!r})"
        job_id = item.get("job_id") or _new_job_id()
        self._publisher.publish(message.name, message.args, job_id, TRADES_QUEUE, argsrepr)

    def _start_flusher(self) -> None:
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._flusher = threading.Thread(target=self._keep_flushing, name="trade-journal-outbox", daemon=True)
        self._flusher.start()

    def _keep_flushing(self) -> None:
        while not self._stopping.wait(self._retry_interval_s):
            if not self._backlog or self.flush():
                return


def _new_job_id() -> str:
    return str(uuid.uuid4())
