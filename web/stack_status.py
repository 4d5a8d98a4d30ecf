"""What the dashboard's health panel shows: the readiness report, the messages waiting in the
broker's queues (either broker) and this host's spool backlog.

The database, broker, workers-per-queue, models and journal checks are `/readyz`'s own
(`web.health`), bounded by its short timeouts, so the panel and the probe never disagree.
"""

from __future__ import annotations

from typing import Any

from config import Settings
from db import Spool
from tasks.contract import OUTBOX_SPOOL, REPLAY_SPOOL, SPOOLS
from web.health import readiness
from web.settings import current_settings


def stack_status() -> dict[str, Any]:
    checks = readiness()
    return {**checks.report(), "queued": checks.queued(), "spool": spool_backlog()}


def spool_backlog() -> dict[str, Any]:
    """Entries waiting in each spool folder of this host; ok while nothing waits to be sent."""
    spool_dir = current_settings().spool_dir
    backlog = {folder: Spool(spool_dir / folder).waiting() for folder in SPOOLS}
    return {"ok": backlog[REPLAY_SPOOL] == 0 and backlog[OUTBOX_SPOOL] == 0, **backlog}


def flower_url(settings: Settings) -> str:
    """Where the operators' browsers reach Flower: FLOWER_URL, else where it listens."""
    return settings.flower_url or settings.service_urls()["flower"]
