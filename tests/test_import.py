"""`flask --app web trades import PATH` on a file-based journal, run twice."""

from __future__ import annotations

import json

from tests.bots.send_task_bot import trade
from tests.support.journal import journal_counts
from tests.support.processes import flask


def test_importing_a_journal_directory_is_idempotent_and_explains_rejections(clean, engine, env, tmp_path):
    journal = tmp_path / "journal"
    (journal / "2026").mkdir(parents=True)
    (journal / "a.json").write_text(json.dumps([trade("imp", n) for n in range(3)]))
    lines = [
        json.dumps(trade("imp", 3)),
        json.dumps(trade("imp", 4)),
        "{not json",
        json.dumps({"symbol": "X"}),
    ]
    (journal / "b.jsonl").write_text("\n".join(lines) + "\n")
    naive = {**trade("imp", 5), "timestamp": "2026-03-01T12:00:00"}
    (journal / "2026" / "c.json").write_text(json.dumps({"trades": [naive]}))
    (journal / "d.json").write_text(json.dumps({**trade("imp", 0), "entry_price": 1.0}))
    (journal / "notes.txt").write_text("not a journal file")

    first = flask(["trades", "import", str(journal)], env, tmp_path, check=False)
    assert first.returncode == 1
    assert "imported 5, already present 0, rejected 4" in first.stdout
    assert "b.jsonl:3: unreadable" in first.stderr
    assert "b.jsonl:4: side: Field required" in first.stderr
    assert "c.json[0]: timestamp: Input should have timezone info" in first.stderr
    assert "trade imp-0: already stored with different entry_price" in first.stderr

    second = flask(["trades", "import", "--naive-as-utc", str(journal)], env, tmp_path, check=False)
    assert "imported 1, already present 5, rejected 3" in second.stdout
    assert journal_counts(engine) == {"rows": 6, "distinct_ids": 6, "closed": 0}


def test_importing_one_clean_file_succeeds(clean, engine, env, tmp_path):
    path = tmp_path / "trades.jsonl"
    path.write_text("".join(json.dumps(trade("one", n)) + "\n" for n in range(20)))
    result = flask(["trades", "import", str(path)], env, tmp_path)
    assert "imported 20, already present 0, rejected 0" in result.stdout
    assert journal_counts(engine)["rows"] == 20
