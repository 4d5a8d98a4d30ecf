"""The file spool on a real disk, with real processes writing and crashing."""

from __future__ import annotations

import json
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path

import pytest

from db import Spool

WRITERS, ROUNDS, PER_ROUND = 4, 150, 3


def _write(folder: str, writer: int) -> None:
    spool = Spool(folder)
    for round_ in range(ROUNDS):
        spool.append(
            {"writer": writer, "n": round_ * PER_ROUND + i, "pad": "x" * 300} for i in range(PER_ROUND)
        )


def test_several_processes_appending_at_once_interleave_whole_lines(tmp_path: Path):
    with get_context("fork").Pool(WRITERS) as pool:
        pool.starmap(_write, [(str(tmp_path), writer) for writer in range(WRITERS)])

    lines = (tmp_path / "active.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # a torn or interleaved line would not parse
    assert len(entries) == WRITERS * ROUNDS * PER_ROUND
    for writer in range(WRITERS):
        mine = [entry["n"] for entry in entries if entry["writer"] == writer]
        assert mine == list(range(ROUNDS * PER_ROUND))  # each writer's order is kept


def test_a_drain_hands_over_entries_in_order_and_empties_the_spool(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.append({"n": n} for n in range(10))
    spool.append({"n": n} for n in range(10, 25))
    seen: list[int] = []

    report = spool.drain(lambda chunk: seen.extend(entry["n"] for entry in chunk), chunk_size=4)

    assert seen == list(range(25))
    assert (report.applied, report.skipped, report.segments) == (25, 0, 1)
    assert spool.waiting() == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [".append.lock", ".drain.lock"]


def test_a_failing_apply_keeps_what_it_did_not_finish(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.append({"n": n} for n in range(10))
    applied: list[int] = []

    def apply_until_broken(chunk):
        if chunk[0]["n"] >= 6:
            raise ConnectionError("database went away")
        applied.extend(entry["n"] for entry in chunk)

    with pytest.raises(ConnectionError):
        spool.drain(apply_until_broken, chunk_size=3)
    assert applied == [0, 1, 2, 3, 4, 5]
    assert spool.waiting() == 4

    spool.append([{"n": 10}])
    spool.drain(lambda chunk: applied.extend(entry["n"] for entry in chunk), chunk_size=3)
    assert applied == list(range(11))


CRASHING_DRAIN = """
import json, os, sys
from db import Spool
log = open(sys.argv[2], "a")
def apply(chunk):
    if chunk[0]["n"] >= 8:
        os._exit(9)  # the process dies outright: no finally, no cleanup
    for entry in chunk:
        log.write(json.dumps(entry["n"]) + "\\n")
    log.flush()
    os.fsync(log.fileno())
Spool(sys.argv[1]).drain(apply, chunk_size=4)
"""


def test_a_replay_that_crashes_half_way_loses_nothing(tmp_path: Path):
    folder, log = tmp_path / "spool", tmp_path / "applied.log"
    Spool(folder).append({"n": n} for n in range(20))

    crashed = subprocess.run([sys.executable, "-c", CRASHING_DRAIN, str(folder), str(log)])
    assert crashed.returncode == 9
    first = [int(line) for line in log.read_text().splitlines()]
    assert first == list(range(8))

    applied: list[int] = []
    Spool(folder).drain(lambda chunk: applied.extend(entry["n"] for entry in chunk), chunk_size=4)
    assert applied == list(range(8, 20))  # what was done is not done again; the rest is


def test_a_torn_line_does_not_spoil_the_next_append(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.append([{"n": 1}])
    with (tmp_path / "active.jsonl").open("ab") as active:
        active.write(b'{"n": 2, "unfinish')
    spool.append([{"n": 3}])
    seen: list[int] = []

    report = spool.drain(lambda chunk: seen.extend(entry["n"] for entry in chunk))

    assert seen == [1, 3]
    assert report.skipped == 1
    assert (tmp_path / "quarantine").is_dir()


def test_only_one_drain_runs_at_a_time(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.append([{"n": 1}])
    inner: list[object] = []

    def apply(chunk):
        inner.append(Spool(tmp_path).drain(lambda _: None))

    spool.drain(apply)
    assert inner == [None]  # the second drain saw the first one holding the lock


def test_a_logged_prediction_with_an_integer_beyond_64_bits_spools_and_comes_back_exact(tmp_path: Path):
    """While the database is down, such an entry (a bot's send_task can carry one) spools
    like any other, with the batch it came in, instead of holding that batch in memory."""
    from datetime import UTC, datetime

    from db import PredictionEntry, entry_from_json

    huge = [[10**30, 1.5, None]]
    entry = PredictionEntry.of(
        {
            "prediction_id": "p-huge",
            "created_at": datetime.now(UTC),
            "model_name": "xgb.json",
            "model_version": "v1",
            "model_type": "xgboost",
            "rows": 1,
            "predictions": [0.25],
            "latency_ms": 1.0,
            "request_id": None,
            "features": huge,
            "contributions": None,
            "role": "champion",
            "shadow_of": None,
        }
    )
    spool = Spool(tmp_path / "replay")
    spool.append([entry.to_json()])
    replayed: list = []
    spool.drain(lambda chunk: replayed.extend(entry_from_json(item) for item in chunk))
    assert [item.fields["features"] for item in replayed] == [huge]
