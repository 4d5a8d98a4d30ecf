"""The machine's RabbitMQ for tests: a virtual host of its own per use, so runs keep apart.

`rabbitmqctl` (run as root, as `.ci/run` is) creates and deletes the vhosts; the tests
then connect as guest/guest on 127.0.0.1:5672, the way a deployment's workers would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("TEST_RABBITMQ_PORT", "5672"))
USER = os.environ.get("TEST_RABBITMQ_USER", "guest")
PASSWORD = os.environ.get("TEST_RABBITMQ_PASSWORD", "guest")


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    command = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run([command, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def answers(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def broker_url(vhost: str) -> str:
    return f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/{quote(vhost, safe='')}"


@contextmanager
def fresh_vhost(prefix: str = "tradebot_test") -> Iterator[str]:
    """A new, empty vhost that guest may use; its AMQP URL is `broker_url(vhost)`."""
    vhost = f"{prefix}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, USER, ".*", ".*", ".*")
        yield vhost
    finally:
        if answers():
            rabbitmqctl("delete_vhost", vhost)


def queue_depths(vhost: str) -> dict[str, int]:
    """Ready plus unacknowledged messages of each queue of `vhost`, as RabbitMQ counts them."""
    out = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "messages")
    depths = {}
    for line in out.splitlines():
        name, _, count = line.rpartition("\t")
        if name:
            depths[name] = int(count)
    return depths
