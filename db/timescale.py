"""TimescaleDB: is it there (migrations, bucketed stats), and what autogenerate must not touch."""

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

_installed: dict[str, bool] = {}


def timescale_available(connection: Connection) -> bool:
    """The server can create the extension (it is in the server's packages)."""
    return bool(
        connection.scalar(
            text("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')")
        )
    )


def timescale_installed(session: Session) -> bool:
    """The extension exists in this database; cached per database URL for the process."""
    key = session.get_bind().url.render_as_string(hide_password=True)
    if key not in _installed:
        _installed[key] = bool(
            session.scalar(text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"))
        )
    return _installed[key]


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
