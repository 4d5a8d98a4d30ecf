"""TimescaleDB: can this server use it (migrations, bucketed stats), and what autogenerate must not touch."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

EXTENSION = "timescaledb"
# A setting TimescaleDB's loader defines when the server preloaded it. pg_settings lists
# defined settings only (not placeholders anyone can SET), and to every role, whereas
# shared_preload_libraries is readable by superusers and pg_read_all_settings alone.
LOADER_SETTING = "timescaledb.max_background_workers"

# For the transaction that runs it: no limit to the tuples TimescaleDB decompresses to
# change rows of compressed chunks (its default, 100,000, fails a journal batch of late
# closes spread over 13 old days; each day's statement decompresses a batch a symbol, the
# statement bounds say which). A placeholder, harmless, where TimescaleDB is not loaded.
LIFT_DECOMPRESSION_LIMIT = text(
    "SELECT set_config('timescaledb.max_tuples_decompressed_per_dml_transaction', '0', true)"
)

_FACTS = text(
    """
    SELECT
        (SELECT default_version FROM pg_available_extensions WHERE name = :extension) AS available,
        (SELECT extversion FROM pg_extension WHERE extname = :extension) AS created,
        (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload,
        EXISTS (SELECT 1 FROM pg_settings WHERE name = :loader_setting) AS loader
    """
)


class TimescaleState(enum.Enum):
    READY = "ready"  # installed and preloaded: the extension and hypertables can be used
    NOT_PRELOADED = "not_preloaded"  # installed, but not in shared_preload_libraries
    NOT_INSTALLED = "not_installed"  # the server has no timescaledb extension


@dataclass(frozen=True)
class TimescaleStatus:
    state: TimescaleState
    reason: str  # one line: what was found
    fix: str | None  # one line: how to make TimescaleDB usable; None when it is
    available_version: str | None  # in pg_available_extensions (the server's packages)
    created_version: str | None  # CREATE EXTENSION was run in this database
    preloaded: bool
    shared_preload_libraries: str | None  # None: this role may not read it

    @property
    def usable(self) -> bool:
        return self.state is TimescaleState.READY


def preload_lists_timescaledb(shared_preload_libraries: str | None) -> bool:
    """'timescaledb' is one of the libraries (any quoting, `$libdir/` or `.so`)."""
    for entry in (shared_preload_libraries or "").split(","):
        name = entry.strip().strip('"').strip("'").rsplit("/", 1)[-1]
        if name.removesuffix(".so") == EXTENSION:
            return True
    return False


def classify(
    available_version: str | None,
    created_version: str | None,
    shared_preload_libraries: str | None,
    loader_present: bool,
) -> TimescaleStatus:
    """The decision, from what the server reports (see `timescale_status`)."""
    preloaded = loader_present or preload_lists_timescaledb(shared_preload_libraries)
    shown = "unreadable by this role" if shared_preload_libraries is None else repr(shared_preload_libraries)

    def status(state: TimescaleState, reason: str, fix: str | None) -> TimescaleStatus:
        return TimescaleStatus(
            state, reason, fix, available_version, created_version, preloaded, shared_preload_libraries
        )

    if available_version is None:
        if created_version is not None:
            return status(
                TimescaleState.NOT_INSTALLED,
                f"this database has the timescaledb extension ({created_version}) but the server"
                " has no timescaledb package",
                "install TimescaleDB for this PostgreSQL server and preload it"
                " (shared_preload_libraries = 'timescaledb')",
            )
        return status(
            TimescaleState.NOT_INSTALLED,
            "this PostgreSQL server has no timescaledb extension",
            "install TimescaleDB for this PostgreSQL server and preload it"
            " (shared_preload_libraries = 'timescaledb')",
        )
    if not preloaded:
        found = (
            "this database has the timescaledb extension but the server does not preload it"
            if created_version
            else "TimescaleDB is installed on this server but not preloaded"
        )
        return status(
            TimescaleState.NOT_PRELOADED,
            f"{found} ('timescaledb' is not in shared_preload_libraries, which is {shown})",
            "add 'timescaledb' to shared_preload_libraries in postgresql.conf and restart PostgreSQL",
        )
    if created_version is not None:
        return status(
            TimescaleState.READY, f"TimescaleDB {created_version} is preloaded and created here", None
        )
    return status(TimescaleState.READY, f"TimescaleDB {available_version} is installed and preloaded", None)


def timescale_status(connection: Connection) -> TimescaleStatus:
    """Can TimescaleDB be used on this connection's server and database, and if not, why.

    Only looks (catalog views and settings): it never loads the library, since loading
    it unpreloaded is a FATAL error that closes the connection.
    """
    row = connection.execute(_FACTS, {"extension": EXTENSION, "loader_setting": LOADER_SETTING}).one()
    return classify(row.available, row.created, row.preload, bool(row.loader))


_installed: dict[str, bool] = {}


def timescale_installed(session: Session) -> bool:
    """The extension exists in this database and can be used (its library is preloaded).

    Cached per database URL for the process.
    """
    key = session.get_bind().url.render_as_string(hide_password=True)
    if key not in _installed:
        status = timescale_status(session.connection())
        _installed[key] = status.usable and status.created_version is not None
    return _installed[key]


def hypertables_in_use(connection: Connection, mode: str) -> bool:
    """Migration 001 made trade_history a hypertable here, so later tables are hypertables too.

    001 already decided (and said why not, once): the extension exists in this database
    only where it made the hypertable, so this looks, never creates.
    """
    if mode == "off":
        return False
    status = timescale_status(connection)
    return status.usable and status.created_version is not None


# TimescaleDB keeps its catalog and chunks in schemas of its own and may add a default
# time index to a hypertable; Alembic's autogenerate must never propose to drop them.
TIMESCALE_SCHEMA_PREFIXES = ("_timescaledb", "timescaledb_")


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    if type_ == "schema":
        return not (name or "").startswith(TIMESCALE_SCHEMA_PREFIXES)
    return True


def include_object(obj, name: str | None, type_: str, reflected: bool, compare_to) -> bool:
    if reflected and compare_to is None:
        # In the database but not in our models: an extension's object, not ours to drop.
        if type_ == "table":
            return False
        if type_ == "index" and (name or "").endswith("_timestamp_idx"):
            return False
    return True
