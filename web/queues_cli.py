"""`flask --app web queues migrate`: RabbitMQ queues declared otherwise than this version
declares them (a classic `trades` left by an older deployment, or declared first by a bot
with Celery's defaults) become the contract's, with every message they hold."""

from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext
from kombu import Connection

from tasks.contract import BROKER_UNAVAILABLE, is_redis_url
from tasks.web_clients import hidden_password
from tasks.web_clients.broker_queues import AMQP_QUEUES
from tasks.web_clients.queue_migration import (
    DEFAULT_BATCH,
    AnotherRun,
    Migrated,
    TargetVanished,
    hold_the_vhost,
    migrate_queue,
)
from web.settings import current_settings

queues_cli = AppGroup("queues", help="RabbitMQ queue commands.")

CONNECT_TIMEOUT_S = 5
STOPPERS = (TargetVanished, AnotherRun)


@queues_cli.command("migrate")
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=10_000),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Messages moved per transaction.",
)
@with_appcontext
def migrate(batch: int) -> None:
    """Move the messages of every queue RabbitMQ holds declared otherwise than this version
    declares it into the contract's queue. Nothing is lost or doubled; stopped at any point,
    it resumes when run again. Workers consume the queue once it is the contract's."""
    url = current_settings().celery_broker_url
    if is_redis_url(url):
        click.echo("CELERY_BROKER_URL is Redis: its queues have no declared arguments, nothing to migrate")
        return
    with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        try:
            connection.ensure_connection(max_retries=0)
            hold_the_vhost(connection)
            for queue in AMQP_QUEUES:
                _report(migrate_queue(connection, queue, batch, _progress))
        except (*BROKER_UNAVAILABLE, *STOPPERS) as exc:
            click.secho(
                f"stopped: {exc or type(exc).__name__} (RabbitMQ at {hidden_password(url)}). "
                "Nothing was lost; run the command again: it goes on from where it stopped.",
                err=True,
                fg="red",
            )
            raise SystemExit(1) from None


def _report(result: Migrated) -> None:
    if result.disagreed or result.moved:
        click.echo(f"{result.queue}: now the contract's queue; {result.moved} messages moved into it")
    else:
        click.echo(f"{result.queue}: nothing to move")


def _progress(source: str, target: str, moved: int) -> None:
    click.echo(f"  {source} -> {target}: {moved} messages")
