"""What the dashboard's health panel shows: the readiness report plus this host's spool backlog.

The database, broker, workers-per-queue, models and journal checks are `/readyz`'s own
(`web.health`), bounded by its short timeouts, so the panel and the probe never disagree.
"""

from __future__ import annotations

from typing import Any

from config import Settings, get_settings
from db.spool import Spool
from web.health import readiness
from web.preflight import service_urls

SPOOL_FOLDERS = ("replay", "outbox", "dead-letter")


def stack_status() -> dict[str, Any]:
    return {**readiness().report(), "spool": spool_backlog()}


def spool_backlog() -> dict[str, Any]:
    """Entries waiting in each spool folder of this host; ok while nothing waits to be sent."""
    spool_dir = get_settings().spool_dir
    backlog = {folder: Spool(spool_dir / folder).waiting() for folder in SPOOL_FOLDERS}
    return {"ok": backlog["replay"] == 0 and backlog["outbox"] == 0, **backlog}


def flower_url(settings: Settings) -> str:
    """Where the operators' browsers reach Flower: FLOWER_URL, else where it listens."""
    return settings.flower_url or service_urls(settings)["flower"]
