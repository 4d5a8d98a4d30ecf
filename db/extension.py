"""The Flask-SQLAlchemy extension, shared by the web app and the worker's Flask app."""

import os
import sys
from pathlib import Path

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, event

from db.jsonb import json_text
from db.models import Base
from db.timeouts import connect_args

database = SQLAlchemy(metadata=Base.metadata)


def flask_config(database_url: str, statement_timeout_s: float = 30.0) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "SQLALCHEMY_ENGINE_OPTIONS": {
            # A connection broken by a database restart is noticed before it is used.
            "pool_pre_ping": True,
            # No call waits forever: statement timeout, keepalives, a client deadline.
            "connect_args": connect_args(statement_timeout_s),
            # jsonb columns encoded by orjson: several times faster than the standard
            # library (the prediction log writes thousands a second), and a NaN (a
            # missing feature value) becomes null, which jsonb can hold.
            "json_serializer": json_text,
        },
    }


@event.listens_for(Engine, "do_connect")
def _name_connection(dialect, connection_record, cargs, cparams) -> None:
    # pg_stat_activity then tells which process holds which connection.
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    cparams.setdefault("application_name", f"tradebot:{program}:{os.getpid()}")
