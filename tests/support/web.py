"""The web server as users start it (gunicorn), on a free port, and the demo models."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.processes import BIN, Service, wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebServer(Service):
    """`gunicorn "web:create_app()"` on a free local port."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "8",
            "web:create_app()",
        ]  # fmt: skip
        super().__init__(args, env, cwd, cwd / f"web-{self.port}.log")

    def wait_ready(self, timeout: float = 60) -> WebServer:
        def answers() -> bool:
            if not self.alive():
                raise AssertionError(f"gunicorn exited:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/static/dashboard.css", timeout=2):  # noqa: S310
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_for(answers, timeout, f"gunicorn on port {self.port} to answer", interval=0.2)
        return self


def train_demo_tree_models(directory: Path) -> set[str]:
    """The XGBoost and LightGBM demo models `make run` trains (the LSTM is left out: torch is slow)."""
    from models.training import train_demo

    return {
        path.name for path in train_demo(directory, progress=lambda _: None, types=("xgboost", "lightgbm"))
    }
