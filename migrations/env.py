"""Alembic environment for Flask-Migrate (`flask --app web db ...`)."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

from db import timeouts
from db.timescale import TimescaleState, include_name, include_object, timescale_status

config = context.config
fileConfig(config.config_file_name)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db
config.set_main_option(
    "sqlalchemy.url", target_db.engine.url.render_as_string(hide_password=False).replace("%", "%%")
)


def run_migrations_offline():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_db.metadata,
        literal_binds=True,
        include_name=include_name,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", process_revision_directives)
    # A migration may rewrite a large table: no statement timeout, no client deadline.
    timeouts.configure(None)
    with target_db.engine.connect() as connection:
        connection.exec_driver_sql("SET statement_timeout = 0")
        status = timescale_status(connection)
        connection.commit()
        if status.state is TimescaleState.NOT_PRELOADED and status.created_version is not None:
            # The extension's event triggers would load its library on the first DDL
            # statement (Alembic's own version table included): a FATAL error.
            raise RuntimeError(f"cannot migrate: {status.reason}; to fix: {status.fix}")
        context.configure(
            connection=connection,
            target_metadata=target_db.metadata,
            include_name=include_name,
            include_object=include_object,
            **conf_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
