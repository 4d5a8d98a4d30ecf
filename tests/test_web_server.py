"""The web server as users start it (`python -m web.server`, granian): it drains on SIGTERM,
replaces a dead worker, refuses an address in use, prints only JSON lines when asked, and
keeps MAX_REQUEST_BYTES for every body, however it is sent and however large."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import psutil
import pytest

from tasks.contract import LANE_KEY
from tests.support.model_zoo import ROWS
from tests.support.processes import WebServer, Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PREDICT = "/api/v1/ml/predict"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def queued(broker) -> bool:
    # Waiting predictions travel over the direct lane (a Redis broker), else the queue.
    return broker.llen(LANE_KEY) + broker.llen("predict") > 0


def predict_in_background(url: str, answer: dict) -> threading.Thread:
    """A synchronous prediction on a thread of its own; its outcome lands in `answer`."""

    def predict() -> None:
        body = json.dumps({"model_name": "xgb.json", "features": ROWS.tolist()}).encode()
        request = urllib.request.Request(url + PREDICT, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=180) as response:
                answer.update(status=response.status, body=json.loads(response.read()))
        except (OSError, http.client.HTTPException) as error:
            answer.update(error=error)

    client = threading.Thread(target=predict)
    client.start()
    return client


def test_sigterm_lets_the_request_in_flight_finish(env, tmp_path, database_url, clean, broker, zoo):
    # No predict worker yet: the synchronous prediction waits inside the web.
    server = WebServer(
        {**env, "PREDICT_TIMEOUT_S": "120", "WEB_GRACEFUL_TIMEOUT_S": "120"}, tmp_path, workers=2
    ).wait_ready()
    worker = None
    try:
        assert len(server.worker_pids()) == 2
        answer: dict = {}
        client = predict_in_background(server.url, answer)

        wait_for(lambda: queued(broker), 30, "the prediction to be queued")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Shutting down granian" in server.log(), 30, "granian to take the SIGTERM")
        # Both workers stop accepting at once (each closes its listening socket)...
        wait_for(lambda: refused(server.port), 30, "new connections to be refused")
        # ...the idle one exits, the one with the request in flight stays.
        wait_for(lambda: len(server.worker_pids()) == 1, 30, "the idle web worker to exit")
        assert server.alive(), "the web server exited with a request in flight"
        assert "error" not in answer and client.is_alive()

        worker = Worker(env, tmp_path, queues="predict", pool="threads").wait_ready()
        client.join(120)
        assert answer.get("status") == 200, answer
        np.testing.assert_allclose(answer["body"]["predictions"], zoo["xgb.json"], atol=1e-6, rtol=0)
        assert server.process.wait(60) == 0
        assert "Killing" not in server.log()
    finally:
        server.stop()
        if worker is not None:
            worker.stop()


def test_a_request_outliving_the_graceful_timeout_is_cut_and_the_server_exits(
    env, tmp_path, database_url, clean, broker, zoo
):
    server = WebServer(
        {**env, "PREDICT_TIMEOUT_S": "120", "WEB_GRACEFUL_TIMEOUT_S": "2"}, tmp_path, workers=1
    ).wait_ready()
    try:
        answer: dict = {}
        client = predict_in_background(server.url, answer)
        wait_for(lambda: queued(broker), 30, "the prediction to be queued")
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert 1.5 < time.monotonic() - signalled < 15
        assert "Killing worker-1 after it refused to gracefully stop" in server.log()
        client.join(30)
        assert "error" in answer, answer  # the connection was cut, no answer
    finally:
        server.stop()


def test_a_sigterm_while_the_workers_start_still_stops_within_the_graceful_timeout(env, tmp_path):
    # granian loses a SIGTERM that reaches a worker before the worker has set up its
    # handlers (it still runs the main process's); its main process kills such a worker
    # once WEB_GRACEFUL_TIMEOUT_S is over, so a stop during the start is bounded.
    server = WebServer({**env, "WEB_GRACEFUL_TIMEOUT_S": "3"}, tmp_path, workers=2)
    try:
        wait_for(lambda: "Spawning worker-2" in server.log(), 60, "granian to spawn its workers")
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert time.monotonic() - signalled < 3 + 10
    finally:
        server.stop()


def test_a_worker_killed_outright_is_replaced(web):
    # A short drain: granian's replacement worker can miss the stop's SIGTERM and is then
    # killed only when WEB_GRACEFUL_TIMEOUT_S is over.
    server = web(workers=2, WEB_GRACEFUL_TIMEOUT_S="3")
    first = server.worker_pids()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)

    def replaced() -> bool:
        pids = server.worker_pids()
        return len(pids) == 2 and first[0] not in pids

    wait_for(replaced, 60, "granian to replace the killed worker")
    assert server.alive()
    wait_for(lambda: server.get("/healthz", timeout=5)[0] == 200, 60, "the web to answer again")
    assert "Unexpected exit from worker-" in server.log()


def test_a_second_server_on_a_taken_address_refuses_to_start(web, env, tmp_path):
    # Each granian worker binds with SO_REUSEPORT, which a second server of the same user
    # could share silently: the launcher refuses instead.
    first = web()
    second = subprocess.run(
        [sys.executable, "-m", "web.server"],
        env={**env, "WEB_BIND": f"127.0.0.1:{first.port}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr
    assert first.get("/healthz")[0] == 200


def test_with_json_logs_every_line_the_web_prints_is_json(start_web):
    web = start_web()
    assert web.get("/healthz", headers={"X-Request-ID": "json-lines-1"})[0] == 200
    # Access lines are written after the answer (web.answered): a stop right after the
    # last answer still writes every one of them.
    for number in range(20):
        assert web.get("/healthz", headers={"X-Request-ID": f"last-{number}"})[0] == 200
    web.stop()
    lines = [line for line in web.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # any other line fails here
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("Starting granian") for message in messages)
    assert any(message.startswith("Spawning worker-") for message in messages)
    assert "Granian shutdown completed, see ya!" in messages
    ours = [entry for entry in entries if entry["request_id"] == "json-lines-1"]
    assert [(entry["logger"], entry["path"], entry["status"]) for entry in ours] == [
        ("web.access", "/healthz", 200)
    ]
    last = {entry["request_id"] for entry in entries if entry["logger"] == "web.access"}
    assert {f"last-{number}" for number in range(20)} <= last
    # granian's own access log stays off: the app's line is the only one per request.
    assert not [entry for entry in entries if entry["logger"].startswith("granian.access")]
    assert {"time", "level", "logger", "process", "request_id"} <= entries[0].keys()


# -- MAX_REQUEST_BYTES (4 MiB by default) on the real server ---------------------------


def raw_post(port: int, path: str, body_bytes: int, chunked: bool) -> tuple[int, dict, int]:
    """POST a body of spaces after a `[`, with a Content-Length or chunked; stop at the
    first send the server refuses. The answer's status and JSON body, and how much was sent."""
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {body_bytes}\r\n\r\n"
    piece = b"[" + b" " * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head.encode())
        try:
            while sent < body_bytes:
                part = piece[: body_bytes - sent]
                connection.sendall(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            if chunked:
                connection.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: the rest is never read
            pass
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, json.loads(response.read()), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/api/v1/trades", PREDICT])
def test_a_body_over_max_request_bytes_is_a_json_413(web, path, chunked):
    server = web()
    limit = 4_194_304
    for size, expected in ((limit, 400), (limit + 1, 413), (limit + 1_000_000, 413)):
        status, body, _ = raw_post(server.port, path, size, chunked)
        # At the limit the body is read whole (and is no JSON document): a 400, not a 413.
        assert status == expected, (size, body)
        code = "request_entity_too_large" if expected == 413 else "malformed_json"
        assert body["error"]["code"] == code


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_refused_without_being_read(web, chunked):
    server = web(workers=2)
    processes = [psutil.Process(server.pid), *(psutil.Process(pid) for pid in server.worker_pids())]

    def rss() -> int:
        return sum(process.memory_info().rss for process in processes)

    before, peak, done = rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, body, sent = raw_post(server.port, "/api/v1/trades", 300 << 20, chunked)
    finally:
        done.set()
        watcher.join()
    assert status == 413 and body["error"]["code"] == "request_entity_too_large"
    # The server stopped reading a little past the limit; socket buffers took the rest.
    assert sent < 64 << 20, f"the server read {sent >> 20} MiB of a 300 MiB body"
    assert peak[0] - before < 64 << 20, f"the web grew by {(peak[0] - before) >> 20} MiB"
    assert server.alive() and server.get("/healthz")[0] == 200


def test_the_launcher_resolves_web_bind():
    from web.server import bind_address

    assert bind_address("127.0.0.1:5173") == ("127.0.0.1", 5173)
    every = "0.0.0.0"  # noqa: S104 - parsed, not bound
    assert bind_address(f"{every}:80") == (every, 80)
    assert bind_address(":5173") == (every, 5173)
    assert bind_address("[::1]:5173") == ("::1", 5173)
    assert bind_address("localhost:5173")[1] == 5173
    for bad in ("5173", "host:", "host:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="WEB_BIND"):
            bind_address(bad)
