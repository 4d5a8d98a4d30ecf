"""PREDICT_TIMELINE_DIR: the web and a predict worker stamp every stage of a synchronous
prediction, which bench/timeline.py joins by job id into where the time went."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.support.http import call
from tests.support.model_zoo import ROWS
from tests.support.processes import Worker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# In the order a request meets them (bench/timeline.py's STAGES), then the worker's end.
WEB_BEFORE = ("request", "parsed", "checked", "pushed")
WORKER = ("popped", "stacked", "predicted", "answered")
WEB_AFTER = ("replied", "decoded", "encoded", "returned")


def stamps_of(directory) -> dict[str, dict[str, int]]:
    jobs: dict[str, dict[str, int]] = defaultdict(dict)
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            stamp = json.loads(line)
            jobs[stamp["job"]][stamp["stage"]] = stamp["ns"]
    return jobs


def test_every_stage_of_a_synchronous_prediction_is_stamped_in_order(env, tmp_path, clean, zoo, start_web):
    stamps = tmp_path / "timeline"
    worker = Worker({**env, "PREDICT_TIMELINE_DIR": str(stamps)}, tmp_path, queues="predict", pool="threads")
    try:
        worker.wait_ready()
        web = start_web(workers=1, PREDICT_TIMELINE_DIR=str(stamps))
        answer = call(
            web.url + "/api/v1/ml/predict", "POST", {"model_name": "xgb.json", "features": ROWS.tolist()}
        )
        assert answer.status == 200, answer.body
        job = answer.json()["prediction_id"]

        def stamped() -> dict[str, int] | None:  # each process writes its stamps every half second
            found = stamps_of(stamps).get(job, {})
            return found if {*WEB_BEFORE, *WORKER, *WEB_AFTER, "done"} <= found.keys() else None

        found = wait_for(stamped, 10, "every stage of the prediction stamped")
        path = [found[stage] for stage in (*WEB_BEFORE, *WORKER, *WEB_AFTER)]
        assert path == sorted(path), found  # one clock for every process of the machine
        assert found["done"] >= found["answered"]
        assert {path.name.split("-")[0] for path in stamps.glob("*.jsonl")} == {"web", "worker"}
    finally:
        worker.stop()
