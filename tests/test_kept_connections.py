"""Each thread's kept Redis connection (`tasks.contract.redis_commands`): threads come and go
(granian replaces a blocking thread idle for 30 s), and neither the pool's limit nor the
server's connections may run out because of it."""

from __future__ import annotations

import gc
import threading
import uuid

import redis

from tasks.contract import send_all
from tests.conftest import RESULT_URL
from tests.support.processes import wait_for


def test_threads_that_come_and_go_neither_exhaust_the_pool_nor_leave_connections_open():
    name = f"kept-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(RESULT_URL, max_connections=2, client_name=name)
    admin = redis.Redis.from_url(RESULT_URL)
    answers: list = []

    def one_request() -> None:
        answers.extend(send_all(client, [("PING",), ("ECHO", "x")]))

    for _ in range(10):  # five times the pool's max_connections, each on a new thread
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join()
    assert answers == [b"PONG", b"x"] * 10

    def open_connections() -> int:
        gc.collect()
        return sum(1 for entry in admin.client_list() if entry.get("name") == name)

    wait_for(lambda: open_connections() == 0, 10, "the finished threads' connections to close")
