"""The Flask-SQLAlchemy extension, shared by the web app and the worker's Flask app."""

from flask_sqlalchemy import SQLAlchemy

from db.models import Base

database = SQLAlchemy(
    metadata=Base.metadata,
    engine_options={
        # A connection broken by a database restart is noticed before it is used.
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": 5},
    },
)


def flask_config(database_url: str) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    }
