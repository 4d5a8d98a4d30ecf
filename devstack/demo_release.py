"""`make demo`'s shadow challenger: a retrained demo model beside xgboost_model.json.

Before the bot trades, `make demo` trains a retrained variant of the demo XGBoost model
(`models.training.train_retrained_xgboost`), keeps it among xgboost_model.json's versions
with `flask --app web models keep` (a subprocess: devstack does not import the web) and
makes it the shadow challenger over HTTP (`PUT /api/v1/ml/models/<name>/release`): every
prediction of the champion is then also run by the challenger and logged, and the bot
prints `GET .../compare` every 30 s. A challenger already set (a second `make demo`) is
left alone. Whatever goes wrong here is one line, and the demo trades without a shadow.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from demo.bot import ApiCallFailed, WebApi

MODEL = "xgboost_model.json"
REASON = "make demo: a retrained model in shadow"
COMPARE_EVERY_S = 30
LOAD_WAIT_S = 10.0  # how long to wait for a predict worker to hold the challenger
# Every predict worker reads the releases once a model-watch tick (2 s) and loads their
# versions then; the versions' `loaded` may be an earlier session's report (the same
# retrained model has the same version), so the wait is at least one tick.
FOLLOW_S = 2.5
ROOT = Path(__file__).resolve().parent.parent
_VERSION = re.compile(r"[0-9a-f]{16}")


class SetUpFailed(Exception):
    """Why there is no shadow: one line."""


class ReleaseApi:
    """The release routes the set-up calls; what fails is a SetUpFailed, one line."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float = 10.0):
        self._web = WebApi(base_url, token, timeout_s)

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self._web.model_url(MODEL, route)
        try:
            return self._web.call(method, url, body)
        except ApiCallFailed as exc:
            if exc.status is not None:
                raise SetUpFailed(f"{method} {url}: {exc}") from None
            raise SetUpFailed(f"the web does not answer at {self._web.base_url} ({exc})") from None


def _when(stamp: str | None) -> str:
    """The API's time (ISO 8601, UTC) as 2026-12-06 23:18:31 UTC."""
    try:
        return datetime.fromisoformat(stamp or "").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(stamp)


def set_up_shadow(
    web_url: str, token: str | None, env: dict[str, str], echo: Callable[[str], None] = click.echo
) -> bool:
    """Make a retrained model the shadow challenger of MODEL, unless one is set already;
    True when MODEL has a shadow challenger to compare. Never raises for what fails: says
    it in a line and answers False."""
    try:
        return _set_up(ReleaseApi(web_url, token), env, echo)
    except SetUpFailed as exc:
        echo(f"make demo: no shadow challenger: {exc}; the demo trades without one")
        return False
    except KeyboardInterrupt:
        echo("make demo: stopped")
        raise SystemExit(130) from None


def _set_up(api: ReleaseApi, env: dict[str, str], echo: Callable[[str], None]) -> bool:
    release = api.call("GET", "release")
    if release.get("challenger") is not None:
        echo(
            f"make demo: {MODEL} already has a challenger ({release['challenger']}, {release.get('mode')},"
            f" since {_when(release.get('challenger_since'))}): its release is left as it is"
        )
        return release.get("mode") == "shadow"
    echo(f"make demo: training a retrained XGBoost demo model, a shadow challenger for {MODEL} ...")
    version = _train_and_keep(env, echo)
    api.call("PUT", "release", {"challenger": version, "mode": "shadow", "reason": REASON})
    echo(
        f"make demo: version {version} (retrained) is the shadow challenger of {MODEL}:"
        " it runs every prediction after the answer, logged only"
    )
    _wait_until_loaded(api, version, echo)
    return True


def _train_and_keep(env: dict[str, str], echo: Callable[[str], None]) -> str:
    """The retrained model trained into a temporary folder and kept as a version of MODEL;
    each of the two slow steps says so as it starts."""
    try:
        with tempfile.TemporaryDirectory(prefix="demo-challenger-") as folder:
            from models.training import train_retrained_xgboost  # imports xgboost: only here

            path = train_retrained_xgboost(Path(folder) / MODEL, progress=lambda _: None)
            echo(f"make demo: keeping it as a version of {MODEL} (flask --app web models keep) ...")
            kept = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "web", "models", "keep", MODEL, str(path)],
                env={**env, "LOG_FORMAT": "text"},  # its log lines are read below
                cwd=ROOT,  # where `make run` runs the web: a relative MODEL_DIR means the same folder
                capture_output=True,
                text=True,
                timeout=120,
            )
    except (OSError, ImportError, subprocess.SubprocessError) as exc:
        raise SetUpFailed(f"the retrained model could not be trained and kept ({exc})") from None
    except Exception as exc:  # xgboost's own errors too: one line, not a traceback
        raise SetUpFailed(f"training the retrained model failed ({type(exc).__name__}: {exc})") from None
    lines = kept.stdout.split()
    if kept.returncode != 0 or not lines or not _VERSION.fullmatch(lines[-1]):
        raise SetUpFailed(f"`flask --app web models keep {MODEL}` failed: {_why(kept.stderr)}")
    return lines[-1]


_LOGGED = re.compile(r" (?:WARNING|ERROR|CRITICAL) \S+ \[\d+\]: (.*)")  # tasks.observability.logs


def _why(stderr: str) -> str:
    """The error a command ended with (click's `Error: ...`, or a traceback's last line) in
    one line, with the last warning it logged when the error points to its log."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no message"
    error = lines[-1].removeprefix("Error: ")
    logged = [match[1] for line in lines[:-1] if (match := _LOGGED.search(line))]
    if error.endswith(" (see the log above)") and logged:
        return f"{error.removesuffix(' (see the log above)')}: {logged[-1]}"
    return error


def _wait_until_loaded(api: ReleaseApi, version: str, echo: Callable[[str], None]) -> None:
    """Until the predict workers follow the release and hold the challenger (its shadows
    start then): FOLLOW_S at least, LOAD_WAIT_S at most."""
    echo("make demo: waiting for the predict workers to load it ...")
    started = time.monotonic()
    while True:
        time.sleep(0.25)
        waited = time.monotonic() - started
        try:
            versions = api.call("GET", "versions").get("versions", [])
        except SetUpFailed as exc:  # the challenger is set: the demo goes on with it
            echo(f"make demo: cannot tell whether the predict workers hold {version} ({exc})")
            return
        loaded = any(entry.get("model_version") == version and entry.get("loaded") for entry in versions)
        if loaded and waited >= FOLLOW_S:
            echo(f"make demo: the predict workers hold {version}; the bot starts")
            return
        if waited >= LOAD_WAIT_S:
            echo(f"make demo: no predict worker holds {version} yet; its shadows start once one does")
            return
