"""Whether RabbitMQ's queues are the ones this version declares, asked the way RabbitMQ answers it.

A queue's arguments cannot change once it exists, and RabbitMQ refuses a declaration that
differs (406 PRECONDITION_FAILED, naming the argument). An older deployment's classic
`trades`, or one a bot declared first with Celery's defaults, is such a queue: Celery
treats that refusal as unrecoverable and its worker exits. So every side asks first: the
worker leaves a disagreeing queue unconsumed (and keeps asking), `/readyz` and `flask
preflight` report it, and `flask --app web queues migrate` moves its messages into the
contract's queue.

Asking never creates a queue: a passive declare first (a queue that does not exist agrees,
whoever declares it first declares the contract's), then the contract's own declaration,
which on an existing queue changes nothing or is refused.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from amqp.exceptions import NotFound, PreconditionFailed

from tasks.contract.queues import declaration_of

MIGRATE_COMMAND = "flask --app web queues migrate"
_ARGUMENT = re.compile(r"inequivalent arg '([^']+)'")


@dataclass(frozen=True)
class Disagreement:
    """RabbitMQ holds `queue` declared otherwise than the contract: `argument` differs."""

    queue: str
    argument: str | None  # None when RabbitMQ's words did not name one
    broker_said: str

    def describe(self) -> str:
        differs = f"its argument {self.argument!r} differs" if self.argument else "its arguments differ"
        return (
            f"RabbitMQ queue {self.queue!r} was declared otherwise than this version declares it "
            f"({differs}: {self.broker_said}); no worker consumes it until its messages are moved "
            f"into the contract's queue: run `{MIGRATE_COMMAND}`"
        )

    def as_dict(self) -> dict[str, str | None]:
        return {"queue": self.queue, "argument": self.argument, "fix": MIGRATE_COMMAND}


def disagreement(connection, queue: str) -> Disagreement | None:
    """How RabbitMQ's `queue` differs from the contract's declaration, over `connection` (a
    kombu Connection); None when it agrees, does not exist, or the contract does not
    declare it. A refusal closes only the channel it was asked on, so each question gets a
    channel of its own; connection errors propagate."""
    contract = declaration_of(queue)
    if contract is None:
        return None
    channel = connection.channel()
    try:
        try:
            channel.queue_declare(queue=queue, passive=True)
        except NotFound:
            return None
        try:
            contract(channel).declare()
        except PreconditionFailed as refusal:
            said = str(refusal.reply_text)
            found = _ARGUMENT.search(said)
            return Disagreement(queue, found.group(1) if found else None, said)
        return None
    finally:
        close_quietly(channel)


def close_quietly(channel) -> None:
    # A channel the broker closed with a refusal has nothing left to close.
    with contextlib.suppress(Exception):
        channel.close()
