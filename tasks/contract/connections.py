"""How every side connects: which kombu transport a broker URL gets, and the Celery
clients that only send (the bot's journal, the web's predictions and its readiness probe).

A client's Celery app is never the current app and holds a connection of its own: Celery
lets CELERY_BROKER_URL override any configured broker, so a client given a broker URL
must not pick another one up from the environment.
"""

from __future__ import annotations

from urllib.parse import urlparse

import redis
from celery import Celery
from sqlalchemy.engine import make_url

from tasks.contract.queues import amqp_queues

# The project's Redis transport (tasks.internals.kombu_redis), named the way kombu loads it.
REDIS_TRANSPORT = "tasks.internals.kombu_redis:Transport"
PROBE_TIMEOUT_S = 2

REDIS_HINT = (
    "start it with `docker compose up -d redis` or `sudo apt-get install redis-server` "
    "(then: sudo service redis-server start), or point CELERY_BROKER_URL at a running Redis"
)


def is_redis_url(url: str) -> bool:
    return urlparse(url).scheme in ("redis", "rediss")


def lane_store_url(broker_url: str, result_url: str) -> str | None:
    """Where the prediction lane lives: in the broker when it is Redis, else in the result
    backend's Redis (RabbitMQ as the broker); None when neither is Redis (no lane)."""
    if is_redis_url(broker_url):
        return broker_url
    return result_url if is_redis_url(result_url) else None


def transport_for(broker_url: str) -> str | None:
    """The project's transport for a Redis broker; None (kombu's choice) for any other."""
    return REDIS_TRANSPORT if is_redis_url(broker_url) else None


def client_app(
    name: str,
    broker_url: str,
    *,
    timeout_s: float,
    socket_timeout_s: float,
    backend: str | None = None,
    connection_retry: bool = True,
) -> Celery:
    """A Celery app that sends to `broker_url` with one connection attempt per call: while
    the broker is down, the caller's own fallback (outbox, 503) takes over."""
    app = Celery(name, set_as_current=False, broker=broker_url, backend=backend)
    app.conf.update(
        # Celery prefers CELERY_BROKER_URL to `broker`, but not to these (its remote control
        # and default connections use them).
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        broker_transport=transport_for(broker_url),
        broker_connection_timeout=timeout_s,
        broker_connection_retry=connection_retry,
    )
    if is_redis_url(broker_url):
        app.conf.broker_transport_options = {
            "max_retries": 0,
            "socket_connect_timeout": timeout_s,
            "socket_timeout": socket_timeout_s,
        }
    else:
        app.conf.update(amqp_client_options(socket_timeout_s))
    return app


def amqp_client_options(socket_timeout_s: float) -> dict:
    """A RabbitMQ client's settings: the contract's queues (a send_task declares them as the
    workers do), and publisher confirms with bounded socket waits, so a send returns only
    once RabbitMQ has the message and never hangs (a blocked connection times out)."""
    return {
        "task_queues": amqp_queues(),
        "broker_transport_options": {
            "confirm_publish": True,
            "read_timeout": socket_timeout_s,
            "write_timeout": socket_timeout_s,
        },
        "broker_heartbeat": 0,  # a sender has no event loop to beat; a dead socket times out instead
    }


def redis_problem(broker_url: str) -> str | None:
    client = redis.Redis.from_url(
        broker_url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        where = make_url(broker_url).render_as_string(hide_password=True)
        return f"Redis does not answer at {where}: {exc}"
    finally:
        client.close()
    return None
