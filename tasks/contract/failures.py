"""The journal's one failure model: every error is sorted here, and only here.

* **unavailable** (a): a dependency (the database, the broker, the spool's disk) is down
  or refuses for a while. Retry with backoff, then spool or keep in the outbox, then
  replay. Counted as an outage; never a redelivery, never a dead letter.
* **unstorable** (b): the entry itself can never be stored. Refused at the door
  (422, `ValidationError`); dead-lettered if it got past, at once.
* A process that died (c) is not an exception anyone catches: its messages are
  redelivered by the broker, under the redelivery cap (`tasks.worker.batching`).

An error this module does not know is (a), with bounded retries: an unknown error is
never a reason to throw a trade away. The README's failure table lists these rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import kombu.exceptions
import redis.exceptions
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from db import UnstorableEntry

try:  # RabbitMQ's client library, installed with Celery
    import amqp.exceptions

    _AMQP_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.AMQPError,)
except ImportError:  # pragma: no cover - amqp is a dependency of kombu
    _AMQP_ERRORS = ()


class Failure(enum.Enum):
    UNAVAILABLE = "unavailable"
    UNSTORABLE = "unstorable"


@dataclass(frozen=True)
class Verdict:
    failure: Failure
    dependency: str  # database, broker, spool, or entry (the entry itself is at fault)
    known: bool = True  # False: an error this model has no rule for (logged with its traceback)

    @property
    def unavailable(self) -> bool:
        return self.failure is Failure.UNAVAILABLE


# Every error a broker client raises means "the broker cannot take or give this now":
# a lost connection, a timeout, or a reply refusing writes (Redis's NOREPLICAS, READONLY
# after a failover, MISCONF, OOM at maxmemory, LOADING; RabbitMQ's channel errors).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    kombu.exceptions.OperationalError,
    kombu.exceptions.ConnectionError,
    kombu.exceptions.ChannelError,
    *_AMQP_ERRORS,
)
# What a publish can raise when the broker cannot take a message (sockets raise OSError).
BROKER_UNAVAILABLE = (*BROKER_ERRORS, OSError)

# SQLSTATE classes whose errors are about the data, not the server: the same entry
# fails the same way on every server, so it can never be stored.
_UNSTORABLE_SQLSTATE_CLASSES = {
    "22",  # data exception: out of range, invalid text, NUL in JSON
    "23",  # integrity constraint violation: NOT NULL, CHECK
    "54",  # program limit exceeded: a value too large to index or to parse
}
# ... except a unique violation: a concurrent writer got there first, and a retry finds
# the row and treats the entry as the duplicate it is.
_RETRYABLE_SQLSTATES = {"23505"}
# psycopg2 refuses these before the statement reaches the server.
_DRIVER_REFUSALS = ("A string literal cannot contain NUL",)


def classify(error: BaseException, talking_to: str = "spool") -> Verdict:
    """Which of the failure classes `error` belongs to.

    `talking_to` names the dependency an OSError or an unknown error came from (the
    spool's disk unless the caller says otherwise: sockets raise OSError too).
    """
    if isinstance(error, ValidationError | UnstorableEntry):
        return Verdict(Failure.UNSTORABLE, "entry")
    if isinstance(error, DBAPIError):
        return _database_error(error)
    if isinstance(error, SQLAlchemyError):
        return Verdict(Failure.UNAVAILABLE, "database")  # pool timeouts, closed connections
    if isinstance(error, UnicodeEncodeError):
        return Verdict(Failure.UNSTORABLE, "entry")  # a lone surrogate: no UTF-8 for it
    if isinstance(error, ValueError) and str(error).startswith(_DRIVER_REFUSALS):
        return Verdict(Failure.UNSTORABLE, "entry")
    if isinstance(error, kombu.exceptions.EncodeError):
        return Verdict(Failure.UNSTORABLE, "entry")
    if isinstance(error, BROKER_ERRORS):
        return Verdict(Failure.UNAVAILABLE, "broker")
    if isinstance(error, OSError):
        return Verdict(Failure.UNAVAILABLE, talking_to)  # ENOSPC, EIO, EROFS, a reset socket
    return Verdict(Failure.UNAVAILABLE, talking_to, known=False)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error (`error.orig.pgcode`), if the server sent one."""
    return getattr(getattr(error, "orig", None), "pgcode", None)


def _database_error(error: DBAPIError) -> Verdict:
    code = sqlstate(error)
    if error.connection_invalidated or code is None or code in _RETRYABLE_SQLSTATES:
        return Verdict(Failure.UNAVAILABLE, "database")
    if code[:2] in _UNSTORABLE_SQLSTATE_CLASSES:
        return Verdict(Failure.UNSTORABLE, "entry")
    # Connection loss (08), a read-only standby (25006), a missing table or column mid
    # deploy (42P01, 42703), a revoked privilege (42501), too many connections or a full
    # disk (53), lock or statement timeouts (55, 57014), shutdowns (57P), I/O (58).
    return Verdict(Failure.UNAVAILABLE, "database")


def brief(error: BaseException) -> str:
    """The first line of an error, with its SQLSTATE when it has one, for log lines."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    line = text[0][:300] if text else type(error).__name__
    code = sqlstate(error)
    return f"{line} (SQLSTATE {code})" if code else line
