"""Is TimescaleDB there? Asked by the migrations and by the repository's bucketed stats."""

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
