"""The columnstore (TimescaleDB compression) settings of the hypertables, where they are.

Chosen for how each table is read, never by its identifier:

- trade_history: segmented by symbol (the trade list filters by it), ordered by opening
  time (every range read); bloom filters on trade_id (the journal's idempotent insert
  names (trade_id, timestamp) as its conflict target, and a late update finds its row)
  and prediction_id (lineage);
- prediction_log: segmented by model and version (a version's entries compress
  together), ordered by time; a bloom filter on prediction_id (a prediction and its
  trades' lineage are found by it);
- trade_closes: segmented by model and version, ordered by close time; a bloom filter on
  trade_id (the fold replaces a corrected close) and min/max of close_day (a close
  day's trades are read by it).

Nothing is compressed here: beat converts chunks older than TRADES_COMPRESS_AFTER_DAYS
and PREDICTION_LOG_COMPRESS_AFTER_DAYS (`db.maintenance`), whether or not TimescaleDB's
own job scheduler runs. On plain PostgreSQL this migration does nothing.

Revision ID: 005
Revises: 004
Create Date: 2026-12-06
"""

import logging

from alembic import op

from config import get_settings
from db.timescale import hypertables_in_use

revision = "005"
down_revision = "004"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_ENABLE = (
    "ALTER TABLE trade_history SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',"
    " timescaledb.compress_orderby = '\"timestamp\" DESC',"
    " timescaledb.compress_index = 'bloom(trade_id), bloom(prediction_id)')",
    "ALTER TABLE prediction_log SET (timescaledb.compress,"
    " timescaledb.compress_segmentby = 'model_name, model_version',"
    " timescaledb.compress_orderby = 'created_at DESC', timescaledb.compress_index = 'bloom(prediction_id)')",
    "ALTER TABLE trade_closes SET (timescaledb.compress,"
    " timescaledb.compress_segmentby = 'model_name, model_version',"
    " timescaledb.compress_orderby = 'closed_at DESC',"
    " timescaledb.compress_index = 'bloom(trade_id), minmax(close_day)')",
)
_TABLES = ("trade_history", "prediction_log", "trade_closes")


def upgrade():
    if not hypertables_in_use(op.get_bind(), get_settings().timescaledb):
        log.info("no hypertables here: no columnstore to set up")
        return
    for statement in _ENABLE:
        op.execute(statement)
    log.info("TimescaleDB columnstore set up for %s (chunks are converted by beat)", ", ".join(_TABLES))


def downgrade():
    if not hypertables_in_use(op.get_bind(), get_settings().timescaledb):
        return
    # Every chunk back to rows first: TimescaleDB refuses to turn the columnstore off otherwise.
    for statement in _DISABLE:
        op.execute(statement)


_DISABLE = (
    "SELECT decompress_chunk(chunk, if_compressed => true) FROM show_chunks('trade_history') AS chunk",
    "ALTER TABLE trade_history SET (timescaledb.compress = false)",
    "SELECT decompress_chunk(chunk, if_compressed => true) FROM show_chunks('prediction_log') AS chunk",
    "ALTER TABLE prediction_log SET (timescaledb.compress = false)",
    "SELECT decompress_chunk(chunk, if_compressed => true) FROM show_chunks('trade_closes') AS chunk",
    "ALTER TABLE trade_closes SET (timescaledb.compress = false)",
)
