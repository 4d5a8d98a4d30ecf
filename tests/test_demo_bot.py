"""`make demo` (`python -m devstack.demo`, which runs `python -m demo.bot`) against a real
stack: the web server, a predict worker with the demo models, a trades worker; the bot's trades
must land in the database, and a retrained model runs in shadow of xgboost_model.json."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from db.compare import MIN_TRADES
from demo.bot import VERDICT_MIN_TRADES, DemoBot
from devstack.demo_release import REASON
from tests.support.demo_models import demo_services
from tests.support.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory, database_url) -> Iterator[dict]:
    with demo_services(tmp_path_factory.mktemp("demo-stack")) as services:
        # What `make run` sets: the demo finds the web server where WEB_BIND says.
        env = {**services.env, "WEB_BIND": f"127.0.0.1:{services.web.port}"}
        yield {"env": env, "models": services.models}


def make_demo(stack: dict, *args: str, spool: Path, **env: str) -> subprocess.CompletedProcess:
    """What `make demo DEMO_ARGS="..."` runs."""
    return subprocess.run(
        [sys.executable, "-m", "devstack.demo", *args],
        env={**stack["env"], "SPOOL_DIR": str(spool), **env}, cwd=ROOT, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip


def get(stack: dict, path: str) -> dict:
    with urllib.request.urlopen(f"http://{stack['env']['WEB_BIND']}{path}", timeout=10) as response:
        return json.load(response)


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        (
            {"MODEL_ARCHIVE_DIR": "/dev/null/versions"},
            "`flask --app web models keep xgboost_model.json` failed: ",
        ),
        ({"WEB_BIND": f"127.0.0.1:{free_port()}"}, "the web does not answer at http://127.0.0.1:"),
    ],
    ids=["archive not writable", "web not answering"],
)
def test_make_demo_trades_without_a_shadow_when_it_cannot_set_one(demo_stack, engine, tmp_path, broken, says):
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE model_release_state, model_releases"))
    result = make_demo(demo_stack, "--duration", "0.3", "--rate", "20", spool=tmp_path, **broken)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "no shadow challenger" in line]
    assert len(lines) == 1 and says in lines[0], result.stdout
    assert lines[0].startswith("make demo: no shadow challenger: ")
    assert lines[0].endswith("; the demo trades without one")
    assert "Traceback" not in result.stdout + result.stderr
    assert " compare " not in result.stdout and "demo bot: opened" in result.stdout
    release = get(demo_stack, "/api/v1/ml/models/xgboost_model.json/release")
    assert release["challenger"] is None


def test_make_demo_runs_a_retrained_model_in_shadow_and_leaves_a_set_release_alone(
    demo_stack, engine, tmp_path
):
    with engine.begin() as connection:  # no release from an earlier test
        connection.execute(text("TRUNCATE model_release_state, model_releases"))
    first = make_demo(demo_stack, "--duration", "1.5", "--rate", "20", "--hold", "1", spool=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    # It says what it does before anything slow (the broker, the training).
    assert first.stdout.startswith("make demo: a demo bot against the stack at http://"), first.stdout
    assert "make demo: training a retrained XGBoost demo model" in first.stdout
    version = re.search(r"version ([0-9a-f]{16}) \(retrained\) is the shadow challenger", first.stdout)[1]
    assert "Traceback" not in first.stdout + first.stderr

    release = get(demo_stack, "/api/v1/ml/models/xgboost_model.json/release")
    assert (release["challenger"], release["mode"]) == (version, "shadow")
    assert release["champion"] != version
    change = get(demo_stack, "/api/v1/ml/models/xgboost_model.json/releases")["changes"][0]
    assert (change["to"], change["mode"], change["reason"]) == (version, "shadow", REASON)

    # Every champion prediction was also run by the challenger, logged as its shadow.
    def shadows() -> int:
        with engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM prediction_log WHERE model_name = 'xgboost_model.json'"
                    " AND role = 'shadow' AND model_version = :version AND shadow_of IS NOT NULL"
                ),
                {"version": version},
            ).scalar_one()

    wait_for(shadows, 30, "shadow predictions of the retrained model")
    # The comparison line, at the end here (every 30 s while it trades).
    assert re.search(
        r"compare   xgboost_model\.json: \d+ pairs .*, \d+ trades, brier champion .* vs challenger .*,"
        r" verdict .* \(n \d+",
        first.stdout,
    ), first.stdout

    # A second `make demo` leaves the release as it is.
    second = make_demo(demo_stack, "--trades", "1", "--rate", "20", "--hold", "1", spool=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"xgboost_model.json already has a challenger ({version}, shadow" in second.stdout
    assert "training" not in second.stdout
    assert get(demo_stack, "/api/v1/ml/models/xgboost_model.json/release") == release


def test_make_demo_says_what_it_does_from_its_first_second(demo_stack, engine, tmp_path):
    """Issue 28: `make demo` was silent for its first 14 s. Its first line comes within a
    second, and each slow step of the set-up says what it does as it starts."""
    with engine.begin() as connection:  # no challenger yet: the set-up trains one
        connection.execute(text("TRUNCATE model_release_state, model_releases"))
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "devstack.demo", "--trades", "1", "--rate", "20", "--hold", "1"],
        env={**demo_stack["env"], "SPOOL_DIR": str(tmp_path)}, cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    with demo:
        lines = [(time.monotonic() - started, line.rstrip("\n")) for line in demo.stdout]
    assert demo.returncode == 0, lines
    first_at, first = lines[0]
    assert first == f"make demo: a demo bot against the stack at http://{demo_stack['env']['WEB_BIND']}"
    assert first_at < 1.0, lines
    said = [line for _, line in lines if line.startswith(("make demo: ", "demo bot: "))]
    steps = [
        "make demo: a demo bot against the stack at ",
        "make demo: training a retrained XGBoost demo model, a shadow challenger for xgboost_model.json ...",
        "make demo: keeping it as a version of xgboost_model.json (flask --app web models keep) ...",
        "make demo: version ",
        "make demo: waiting for the predict workers to load it ...",
        "make demo: the predict workers hold ",
        "demo bot: BTC/USDT, ETH/USDT on ",
    ]
    assert [line[: len(step)] for line, step in zip(said, steps, strict=False)] == steps, said


def test_make_demo_trades_10_opens_exactly_10_on_three_symbols(demo_stack, start_worker, engine, tmp_path):
    """Issue 28: `--trades 10` opened 11: the bot stopped at the tenth close while another
    symbol had opened an eleventh. With three symbols and these models nearly every seed did
    (seed 1: 12 without the guard in DemoBot._decide); the journal holds exactly ten."""
    start_worker()
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE trade_history, trade_pending_updates"))
    result = make_demo(
        demo_stack, "--symbols", "BTC/USDT,ETH/USDT,SOL/USDT", "--trades", "10", "--rate", "20",
        "--hold", "2", "--seed", "1", spool=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    opened = re.findall(r" open  (?:buy|sell) .* trade ([0-9a-f]{32})", result.stdout)
    assert len(opened) == 10 and "demo bot: opened 10, closed 10" in result.stdout, result.stdout
    assert {symbol for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT") if f" {symbol} " in result.stdout} == {
        "BTC/USDT", "ETH/USDT", "SOL/USDT"
    }  # fmt: skip

    def journaled() -> list:
        with engine.connect() as connection:
            return connection.execute(text("SELECT trade_id FROM trade_history WHERE closed")).scalars().all()

    wait_for(lambda: len(journaled()) >= 10, 60, "the ten trades closed in the journal")
    assert sorted(journaled()) == sorted(opened)


def test_the_demo_bot_trades_on_the_models_and_journals_every_trade(demo_stack, start_worker, engine, env):
    start_worker()
    result = make_demo(
        demo_stack, "--symbols", "BTC/USDT,ETH/USDT", "--trades", "4", "--rate", "20", "--hold", "2",
        "--seed", "11", spool=Path(env["SPOOL_DIR"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    opened = re.findall(r" open  (buy|sell) .* trade ([0-9a-f]{32})", result.stdout)
    closed = re.findall(r" close .* pnl ([-+][0-9.]+) .* trade ([0-9a-f]{32})", result.stdout)
    assert len(opened) == 4 and len(closed) == 4, result.stdout  # --trades 4: exactly 4
    assert "no prediction" not in result.stdout
    assert f"opened {len(opened)}, closed {len(closed)}" in result.stdout

    ids = [trade_id for _, trade_id in opened]

    def journaled() -> list:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT trade_id, side, closed, realized_pnl, exit_price, won, agent_votes, signals,"
                    " prediction_id, model_name, model_version"
                    " FROM trade_history WHERE trade_id = ANY(:ids) AND closed AND model_version IS NOT NULL"
                ),
                {"ids": ids},
            ).all()
        return rows if len(rows) == len(ids) else []

    rows = {row.trade_id: row for row in wait_for(journaled, 60, "every demo trade closed and linked")}
    printed_pnl = {trade_id: float(pnl) for pnl, trade_id in closed}
    for side, trade_id in opened:
        row = rows[trade_id]
        assert row.side == side and row.exit_price > 0
        assert row.realized_pnl == pytest.approx(printed_pnl[trade_id], abs=0.01)
        assert row.won is (row.realized_pnl > 0)
        # Every model voted with a probability, and the features it saw are kept.
        assert set(row.agent_votes) == demo_stack["models"]
        assert all(0 <= vote <= 1 for vote in row.agent_votes.values())
        assert set(row.signals) == {"return_1", "return_5", "volatility", "rsi", "volume_z"}
        # Lineage: the trade names the prediction behind it, and so its model version.
        assert row.prediction_id and row.model_name in demo_stack["models"]

    # What the operators read: the realized performance of each model version.
    traded = {row.model_name for row in rows.values()}
    for name in traded:
        url = f"http://{demo_stack['env']['WEB_BIND']}/api/v1/ml/models/{name}/performance"
        with urllib.request.urlopen(url, timeout=10) as response:
            versions = json.load(response)["versions"]
        linked = sum(version["trades"] for version in versions)
        assert linked >= sum(row.model_name == name for row in rows.values())
        assert all(version["predictions"] > 0 for version in versions)


def test_the_demo_bot_says_when_a_prediction_fails_and_goes_on(demo_stack, tmp_path):
    result = make_demo(
        demo_stack, "--models", "no_such_model.json", "--duration", "1", "--rate", "20", spool=tmp_path
    )
    assert result.returncode == 0
    assert "no prediction (no_such_model.json: HTTP 404" in result.stdout
    assert "opened 0, closed 0" in result.stdout


def test_make_demo_says_when_no_broker_answers(demo_stack, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = make_demo(demo_stack, "--trades", "1", spool=tmp_path, CELERY_BROKER_URL=dead)
    assert result.returncode == 1
    assert f"Redis does not answer at {dead}" in result.stderr
    assert "Start the stack with `make run` first" in result.stderr
    assert not (tmp_path / "outbox").exists()  # nothing was traded into the void


class FakeApi:
    """Every model sure the price rises: each free symbol opens on every tick."""

    def probability_up(self, model_name: str, features: list[float]) -> tuple[float, str]:
        return 0.9, "p1"


class FakeJournal:
    def __init__(self):
        self.trades: list[str] = []
        self.closes: list[str] = []

    def record_trade(self, trade: dict):
        self.trades.append(f"t{len(self.trades)}")
        return type("Sent", (), {"trade_id": self.trades[-1], "spooled": False})()

    def update_trade(self, trade_id: str, **changes):
        self.closes.append(trade_id)


@pytest.mark.parametrize("trades", [1, 4, 5, 10])
def test_the_demo_bot_opens_exactly_the_trades_asked_for(trades):
    journal = FakeJournal()
    bot = DemoBot(
        FakeApi(), journal, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], ["m"], seed=1, notional=1000.0,
        hold_ticks=2, max_trades=trades, echo=lambda _: None,
    )  # fmt: skip
    bot.run(rate=100)
    assert (bot.opened, bot.closed) == (trades, trades)
    assert len(journal.trades) == trades and sorted(journal.closes) == sorted(journal.trades)


def test_the_bot_knows_how_many_trades_a_verdict_needs():
    assert VERDICT_MIN_TRADES == MIN_TRADES


def test_the_demo_bot_imports_only_the_trade_journal_from_the_project():
    tree = ast.parse((ROOT / "demo" / "bot.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    project = {name for name in imported if name.split(".")[0] in {"web", "tasks", "db", "models", "config"}}
    assert project == {"tasks.client"}
