"""Moving a queue declared otherwise than the contract into the contract's queue, on RabbitMQ.

A queue's arguments cannot change, and the contract's queue has the same name, so the move
takes two hops through a staging queue (`<queue>.migrating`, of the contract's queue type):
the old queue's messages into staging; the old queue deleted (only when empty: a publisher
still sending to it sends its messages round again); the contract's queue declared; staging
into it; staging deleted. Every step reads where it stands from the broker, so a run killed
anywhere resumes when run again. One run at a time per vhost: a run holds an exclusive queue
(RabbitMQ drops it with the run's connection, however the run ended), so a staging queue
found empty is nobody's to fill.

Each hop takes a batch with `basic.get`, publishes it to the target and acknowledges it at
the source in one AMQP transaction. RabbitMQ confirms the commit once the target holds the
messages (the transfer of responsibility that publisher confirms give), and applies a
commit's publishes and acknowledgements together: a run killed before its commit leaves the
batch in the source (redelivered), never in both, so nothing is lost and nothing doubled.
Confirms alone cannot give that: a run killed between a confirm and its acknowledgement
would move that message twice. (A channel is either transactional or in confirm mode.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import amqp
from amqp.exceptions import AMQPNotImplementedError, NotFound, PreconditionFailed, ResourceLocked
from kombu import Connection, Queue

from tasks.contract.queue_agreement import close_quietly, disagreement
from tasks.contract.queues import declaration_of

STAGING_SUFFIX = ".migrating"
DEFAULT_BATCH = 200
LOCK_QUEUE = "queues-migrate.lock"

Progress = Callable[[str, str, int], None]  # (source, target, moved so far)


class AnotherRun(Exception):
    """Another `queues migrate` holds this vhost."""


class TargetVanished(Exception):
    """RabbitMQ returned messages as unroutable: the target queue was deleted under the move."""


@dataclass(frozen=True)
class Migrated:
    queue: str
    disagreed: bool  # the queue on the broker differed from the contract's when the run began
    moved: int  # messages that reached the contract's queue in this run


def hold_the_vhost(connection: Connection) -> None:
    """Take this run's lock on the vhost, for as long as `connection` lives."""
    try:
        Queue(LOCK_QUEUE, exclusive=True, auto_delete=True)(connection.default_channel).declare()
    except ResourceLocked:
        raise AnotherRun("another `queues migrate` is moving this vhost's queues; let it finish") from None


def migrate_queue(
    connection: Connection, queue: str, batch: int = DEFAULT_BATCH, progress: Progress | None = None
) -> Migrated:
    """Make `queue` the contract's, keeping every message it (or an earlier, interrupted
    run's staging queue) holds. The caller holds the vhost (`hold_the_vhost`)."""
    contract = declaration_of(queue)
    if contract is None:
        raise ValueError(f"the contract declares no queue {queue!r}")
    staging = Queue(
        f"{queue}{STAGING_SUFFIX}",
        durable=True,
        queue_arguments={"x-queue-type": (contract.queue_arguments or {}).get("x-queue-type", "classic")},
    )
    disagreed = False
    while disagreement(connection, queue) is not None:
        disagreed = True
        _declare(connection, staging)
        _move(connection, queue, staging.name, batch, progress)
        _delete_when_empty(connection, queue)  # not when a publisher sent more meanwhile: round again
    moved = 0
    if _exists(connection, staging.name):
        _declare(connection, contract)
        moved = _move(connection, staging.name, queue, batch, progress)
        # Under the vhost's lock nothing else fills staging, and the move left it empty.
        _delete_when_empty(connection, staging.name)
    return Migrated(queue, disagreed, moved)


def _move(connection: Connection, source: str, target: str, batch: int, progress: Progress | None) -> int:
    channel = connection.channel()
    returned: list[amqp.Message] = []
    channel.events["basic_return"].add(lambda exc, exchange, routing_key, message: returned.append(message))
    channel.tx_select()
    moved = 0
    try:
        while True:
            tags = []
            while len(tags) < batch and (message := channel.basic_get(source, no_ack=False)) is not None:
                copy = amqp.Message(message.body, **_as_sent(message.properties))
                # mandatory: a target deleted under the move returns the message instead of dropping it
                channel.basic_publish(copy, exchange="", routing_key=target, mandatory=True)
                tags.append(message.delivery_tag)
            if not tags:
                return moved
            channel.basic_ack(tags[-1], multiple=True)
            channel.tx_commit()
            if returned:
                _put_back(connection, returned, source)
                raise TargetVanished(
                    f"queue {target!r} was deleted during the move; {source!r} keeps what is left"
                )
            moved += len(tags)
            if progress is not None:
                progress(source, target, moved)
    finally:
        close_quietly(channel)


def _as_sent(properties: dict) -> dict:
    # A quorum source counts its deliveries in x-delivery-count: its own bookkeeping, which
    # the target keeps for itself.
    headers = {
        k: v for k, v in (properties.get("application_headers") or {}).items() if k != "x-delivery-count"
    }
    return {**properties, "application_headers": headers}


def _put_back(connection: Connection, messages: list[amqp.Message], source: str) -> None:
    channel = connection.channel()
    try:
        channel.tx_select()
        for message in messages:
            channel.basic_publish(message, exchange="", routing_key=source, mandatory=True)
        channel.tx_commit()
    finally:
        close_quietly(channel)


def _declare(connection: Connection, queue: Queue) -> None:
    channel = connection.channel()
    try:
        queue(channel).declare()
    finally:
        close_quietly(channel)


def _exists(connection: Connection, queue: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(queue=queue, passive=True)
        return True
    except NotFound:
        return False
    finally:
        close_quietly(channel)


def _delete_when_empty(connection: Connection, queue: str) -> None:
    """Delete `queue` only while it holds nothing: RabbitMQ's if-empty for a classic queue,
    which no publish can slip past; quorum queues refuse if-empty (NOT_IMPLEMENTED, which
    closes the connection, hence a connection of its own), so for them the count is read
    first (a quorum queue here is staging, which only this run fills)."""
    with connection.clone() as attempt:
        channel = attempt.channel()
        try:
            channel.queue_delete(queue=queue, if_empty=True)
            return
        except (PreconditionFailed, NotFound):
            return  # not empty (sent to meanwhile: the caller looks again) or already gone
        except AMQPNotImplementedError:
            pass
    channel = connection.channel()
    try:
        if channel.queue_declare(queue=queue, passive=True).message_count == 0:
            channel.queue_delete(queue=queue)
    except NotFound:
        pass
    finally:
        close_quietly(channel)
