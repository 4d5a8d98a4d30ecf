"""`flask --app web trades import PATH` against real workers: the file's entries go through
the journal's own path (the bot's client, the broker, the workers' batches), are
validated at the door, keep their job ids, and a second import stores nothing twice."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from tasks.client import TradeJournal
from tasks.contract import TRADES_QUEUE
from tasks.worker.journal import dead_letter
from tasks.worker.journal import dead_letters as dead_letter_spool
from tests.bots.send_task_bot import trade
from tests.conftest import accept_every_symbol
from tests.support.journal import dead_letters, journal_counts, rows_reach, sender
from tests.support.processes import flask, free_port, wait_for


def import_file(path: Path, env: dict[str, str], cwd: Path, *options: str):
    return flask(["trades", "import", *options, str(path)], env, cwd, check=False)


def write_lines(path: Path, items: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def update_line(trade_id: str, job_id: str, second: int, **updates) -> dict:
    stamped = {**updates, "updated_at": f"2026-02-01T00:00:{second:02d}+00:00"}
    return {"kind": "update", "trade_id": trade_id, "updates": stamped, "job_id": job_id}


def stored(engine, trade_id: str) -> dict:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT symbol, closed, exit_price, realized_pnl, fees"
                " FROM trade_history WHERE trade_id = :id"
            ),
            {"id": trade_id},
        ).one()
    return dict(row._mapping)


def queued_ids(env: dict[str, str]) -> set[str]:
    """The ids of the messages waiting in the trades queue (as kombu's Redis transport keeps them)."""
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    return {json.loads(raw)["headers"]["id"] for raw in broker.lrange(TRADES_QUEUE, 0, -1)}


def reasons_of(letters: list[dict]) -> set[str]:
    return {letter["reason"].split(":", 1)[0] for letter in letters}


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


# -- (1) records and updates land; a second import stores nothing twice ----------------------


def test_records_and_updates_land_and_a_second_import_stores_nothing_twice(
    clean, engine, env, start_worker, tmp_path
):
    start_worker()
    journal = tmp_path / "journal"
    (journal / "2026").mkdir(parents=True)
    (journal / "a.json").write_text(json.dumps([trade("imp", n) for n in range(3)]))
    write_lines(
        journal / "b.jsonl",
        [
            trade("imp", 3),
            {"kind": "record", "trade": trade("imp", 4), "job_id": "job-imp-4"},  # an outbox line
            update_line("imp-0", "job-close-0", 1, closed=True, exit_price=40_100.0, realized_pnl=12.5),
            update_line("imp-3", "job-fees-3", 2, fees=0.4),
            "{not json",
            {"symbol": "X"},
            '{"trade_id": "nan-0", "amount": NaN}',
            {k: v for k, v in trade("imp", 9).items() if k != "timestamp"},  # a default would double it
        ],
    )
    naive = {**trade("imp", 5), "timestamp": "2026-03-01T12:00:00"}
    (journal / "2026" / "c.json").write_text(json.dumps({"trades": [naive]}))
    (journal / "notes.txt").write_text("not a journal file")

    first = import_file(journal, env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "valid 7 (5 records, 2 updates): sent 7, kept in the outbox 0; refused 5" in first.stdout
    assert "stored 5 of 5 records; 2 updates enqueued" in first.stdout
    assert "c.json[0]: timestamp: Input should have timezone info" in first.stderr
    assert "b.jsonl:5: not JSON" in first.stderr
    assert "b.jsonl:6: a trades.record message must carry trade_id and timestamp" in first.stderr
    assert "b.jsonl:7: not JSON: NaN is not a JSON number" in first.stderr
    assert "b.jsonl:8: a trades.record message must carry timestamp" in first.stderr
    wait_for(rows_reach(engine, 5, closed=1), 30, "the close of imp-0")
    wait_for(lambda: stored(engine, "imp-3")["fees"] == 0.4, 30, "the fees of imp-3")

    # Again, with the naive time read as UTC and a record that disagrees with the journal.
    (journal / "d.json").write_text(json.dumps({**trade("imp", 0), "entry_price": 1.0}))
    second = import_file(journal, env, tmp_path, "--naive-as-utc")
    assert second.returncode == 1, second.stderr
    assert "valid 9 (7 records, 2 updates): sent 9, kept in the outbox 0; refused 4" in second.stdout
    assert "stored 6 of 7 records" in second.stdout
    assert "trade imp-0: already stored with different entry_price" in second.stderr
    assert "1 record not imported: the journal holds the trade with other opening fields" in second.stderr
    wait_for(lambda: "conflict" in reasons_of(dead_letters(env)), 30, "the conflict's dead letter")
    assert journal_counts(engine) == {"rows": 6, "distinct_ids": 6, "closed": 1}
    assert stored(engine, "imp-0") == {
        "symbol": "BTC/USDT",
        "closed": True,
        "exit_price": 40_100.0,
        "realized_pnl": 12.5,
        "fees": None,
    }


# -- (2) a dead-letter file, re-imported ---------------------------------------------------


def test_dead_letters_are_reimported_valid_entries_land_and_the_rest_is_reported(
    clean, engine, env, start_worker, tmp_path, refusing_symbol
):
    start_worker()
    app = sender(env)
    app.send_task("trades.record", args=[{**trade("dl", 0), "symbol": refusing_symbol}], queue="trades")
    app.send_task("trades.record", args=[{**trade("dl", 1), "amount": float("nan")}], queue="trades")
    no_time = {k: v for k, v in trade("dl", 2).items() if k != "timestamp"}
    app.send_task("trades.record", args=[no_time], queue="trades")
    app.send_task("trades.record", args=[trade("dl", 3)], queue="trades")
    app.close()
    wait_for(lambda: len(dead_letters(env)) == 3, 30, "the workers' three dead letters")
    wait_for(rows_reach(engine, 1), 30, "the valid record")
    letters = tmp_path / "letters"
    letters.mkdir()
    shutil.copy(Path(env["SPOOL_DIR"]) / "dead-letter" / "active.jsonl", letters / "worker.jsonl")

    # Letters of the other shapes, written the way workers write them.
    close = {"closed": True, "exit_price": 40_050.0, "realized_pnl": 5.0, "updated_at": "2026-02-01T00:00Z"}
    dead_letter("poison: its worker died 6 times", _call("trades.update", "u-1", ["dl-0", close]))
    dead_letter("unstorable: test", update_line("dl-3", "u-2", 2, fees=0.7))
    dead_letter("invalid: missing a required argument: 'updates'", _call("trades.update", "u-3", ["dl-3"]))
    body = '[[{"trade_id": "dl-9"}], {}, {}]'
    for task_id, kept in (("p-1", body.encode()), ("p-2", body)):  # bytes are kept as text (sanitized)
        message = {"task": "trades.record", "id": task_id, "content_type": "application/json", "body": kept}
        dead_letter("undecodable: test", message)
    shutil.copy(dead_letter_spool().directory / "active.jsonl", letters / "mine.jsonl")

    accept_every_symbol(engine)  # the record the database refused is storable now
    first = import_file(letters, env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "valid 3 (1 record, 2 updates): sent 3, kept in the outbox 0; refused 5" in first.stdout
    assert "stored 1 of 1 record" in first.stdout
    assert first.stderr.count("whose payload was sanitized") == 2  # the NaN, the bytes
    assert "a trades.record message must carry timestamp" in first.stderr
    assert "wrong arguments for trades.update: missing a required argument: 'updates'" in first.stderr
    assert "of a message Celery could not run" in first.stderr
    wait_for(lambda: stored(engine, "dl-0")["closed"], 30, "the close of dl-0")
    wait_for(lambda: stored(engine, "dl-3")["fees"] == 0.7, 30, "the fees of dl-3")
    assert stored(engine, "dl-0")["symbol"] == refusing_symbol

    second = import_file(letters, env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "stored 1 of 1 record" in second.stdout
    assert journal_counts(engine) == {"rows": 2, "distinct_ids": 2, "closed": 1}


def _call(task: str, task_id: str, args: list) -> dict:
    return {"task": task, "id": task_id, "args": args, "kwargs": {}}


# -- (3) no worker: a clear failure, and the messages stay queued --------------------------


def test_without_a_worker_it_fails_clearly_and_the_messages_stay_queued(
    clean, engine, env, start_worker, tmp_path
):
    outbox = [{"kind": "record", "trade": trade("late", n), "job_id": f"job-late-{n}"} for n in range(4)]
    outbox.append(update_line("late-0", "job-late-close", 1, closed=True, realized_pnl=-3.0))
    fees = _call("trades.update", "job-fees", ["late-1", {"fees": 0.3, "updated_at": "2026-02-01T00:00Z"}])
    outbox.append({"reason": "poison: test", "at": "", "payload": fees})  # a dead letter
    path = write_lines(tmp_path / "outbox.jsonl", outbox)

    result = import_file(path, env, tmp_path, "--wait-s", "1")
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "valid 6 (4 records, 2 updates): sent 6" in result.stdout
    assert "after 1s, 4 of 4 records not stored yet" in result.stderr
    assert "are the trades workers running? See /readyz" in result.stderr
    # The message ids are the file's job ids (a call's id): importing a line again is the same message.
    assert queued_ids(env) == {*(f"job-late-{n}" for n in range(4)), "job-late-close", "job-fees"}

    start_worker()
    wait_for(rows_reach(engine, 4, closed=1), 30, "the queued messages, stored by a worker started later")
    again = import_file(path, env, tmp_path, "--wait-s", "30")
    assert again.returncode == 0, again.stderr
    assert "stored 4 of 4 records" in again.stdout
    assert journal_counts(engine) == {"rows": 4, "distinct_ids": 4, "closed": 1}
    wait_for(lambda: stored(engine, "late-1")["fees"] == 0.3, 30, "the fees of late-1")


def test_with_the_broker_down_entries_wait_in_the_outbox_and_go_on_when_it_answers(
    clean, engine, env, start_worker, tmp_path
):
    path = write_lines(tmp_path / "trades.jsonl", [trade("box", n) for n in range(3)])
    down = {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}

    result = import_file(path, down, tmp_path, "--no-wait")
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "valid 3 (3 records, 0 updates): sent 0, kept in the outbox 3; refused 0" in result.stdout
    assert "they wait in" in result.stdout and "once it answers" in result.stdout
    assert "3 entries in the outbox, not sent yet" in result.stderr

    # The broker answers: the next journal on this outbox sends them on.
    with TradeJournal(env["CELERY_BROKER_URL"], env["SPOOL_DIR"]) as journal:
        assert journal.waiting == 3 and journal.flush()
    start_worker()
    wait_for(rows_reach(engine, 3), 30, "the trades from the outbox")


def test_when_neither_the_broker_nor_the_outbox_takes_an_entry_it_stops_and_says_so(
    clean, env, tmp_path, tiny_filesystem
):
    # The broker is down and the outbox's disk is full.
    with (tiny_filesystem / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"x" * 4096)
    path = write_lines(tmp_path / "trades.jsonl", [trade("lost", n) for n in range(3)])
    down = {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    down["SPOOL_DIR"] = str(tiny_filesystem)

    result = import_file(path, down, tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "valid 0 (0 records, 0 updates)" in result.stdout
    assert f"stopped at {path}:1: the broker is unavailable and the outbox" in result.stderr
    assert "No space left on device; trade lost-0 was not journaled; 3 entries from there on" in result.stderr


# -- (4) bad files: clear errors, never a traceback ------------------------------------------


@pytest.fixture
def run_import(app):
    runner = app.test_cli_runner()

    def run(path: Path, *options: str):
        result = runner.invoke(args=["trades", "import", *options, str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert "Traceback" not in result.output
        return result

    return run


def test_a_path_that_does_not_exist(run_import, tmp_path):
    result = run_import(tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.json", "{not json", "not JSON: Expecting property name"),
        ("nan.json", '[{"trade_id": "n-0", "amount": NaN}]', "not JSON: NaN is not a JSON number"),
        ("inf.json", '{"amount": -Infinity}', "not JSON: -Infinity is not a JSON number"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "not JSON: nested too deep"),
        ("latin1.jsonl", "caf\xe9\n".encode("latin-1"), "'utf-8' codec can't decode"),
        ("folder.json", None, "[Errno 21] Is a directory"),
    ],
)
def test_an_unreadable_file_stops_the_import_before_anything_is_sent(
    clean, run_import, tmp_path, env, name, content, says
):
    folder = tmp_path / "in"
    write_lines(folder / "good.jsonl", [trade("never", 0)])
    if content is None:
        (folder / name).mkdir()
    else:
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_import(folder)
    assert result.exit_code == 1
    assert f"cannot read {folder / name}: {says}" in result.stderr
    assert "1 of 2 files unreadable; nothing was sent" in result.stderr
    assert not queued_ids(env)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("42", "[0]: not a JSON object"),
        ('"text"', "[0]: not a JSON object"),
        ("[1, [], null]", "[2]: not a JSON object"),
        ('{"trades": 5}', "[0]: a trades.record message must carry trade_id and timestamp"),
        ('{"trade_id": "x", "timestamp": "2026-01-01T00:00Z"}', "[0]: symbol: Field required; side: Field"),
        ('{"kind": "close", "trade_id": "x"}', "[0]: unknown entry kind 'close'"),
        ('{"kind": "update", "trade_id": "x", "updates": {}}', "[0]: entry: Value error, an update needs"),
        ('{"kind": "record", "trade": {}, "job_id": 7}', "[0]: job_id must be a string"),
        ('{"task": "trades.recrod", "id": "t", "args": []}', "[0]: 'trades.recrod' is not a trades task"),
        ('{"task": "trades.record", "id": "t", "args": "abc"}', "[0]: a trades.record call needs a list"),
        ('{"reason": "invalid", "at": "now", "payload": [1]}', "[0]: dead letter (invalid) whose payload is"),
        ('{"reason": "x", "at": "", "payload": {"sanitized": true, "value": {}}}', "payload was sanitized"),
    ],
)
def test_a_file_with_nothing_valid_says_why_for_each_entry(clean, run_import, tmp_path, env, content, says):
    path = tmp_path / "shapes.json"
    path.write_text(content)
    result = run_import(path)
    assert result.exit_code == 1
    assert says in result.stderr
    assert f"nothing valid to import in {path}; nothing was sent" in result.stderr
    assert not queued_ids(env)


def test_an_empty_file_has_nothing_to_import(run_import, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    result = run_import(path)
    assert result.exit_code == 1 and "no entries in" in result.stderr


def test_refusals_beyond_the_first_few_are_counted_not_listed(clean, run_import, tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"symbol": "X"}] * 30)
    result = run_import(path, "--show-refused", "5")
    assert result.exit_code == 1
    assert "refused 30" in result.stdout
    assert result.stderr.count("  refused ") == 5
    assert "... and 25 more (--show-refused 0 lists all)" in result.stderr


def test_the_command_itself_prints_no_traceback_on_a_hostile_file(clean, env, tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"[" * 50_000 + b"\n" + b'{"kind": "record", "trade": NaN}\n' + b"\xff\xfe\n")
    result = import_file(path, env, tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1 and f"cannot read {path}: 'utf-8' codec can't decode" in result.stderr
    path.write_bytes(b"[" * 50_000 + b"\n" + b'{"kind": "record", "trade": NaN}\n')
    result = import_file(path, env, tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1 and "nothing valid to import" in result.stderr
    assert "hostile.jsonl:1: not JSON: nested too deep" in result.stderr
    assert "hostile.jsonl:2: not JSON: NaN is not a JSON number" in result.stderr
