"""Prometheus counters of the trade journal's write path.

In worker processes they live in PROMETHEUS_MULTIPROC_DIR when that is set (prometheus
client's multiprocess mode), so that one exporter can add up every process.
"""

from prometheus_client import Counter

WRITTEN = Counter("journal_entries_written", "Journal entries applied to the database", ["outcome"])
CONFLICTS = Counter("journal_conflicts", "Records refused because their trade_id exists with other content")
SPOOLED = Counter("journal_spooled_entries", "Entries spooled because the database was down")
REPLAYED = Counter("journal_replayed_entries", "Spooled entries replayed into the database")
DEAD_LETTERS = Counter("journal_dead_letters", "Entries dead-lettered, by reason", ["reason"])
