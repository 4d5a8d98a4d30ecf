"""Where one synchronous prediction spends its time, stage by stage, in the web and the worker.

    .venv/bin/python bench/timeline.py                    # xgb-5, 1 client then 32
    .venv/bin/python bench/timeline.py --seconds 10 --clients 1,8,32 --ref HEAD

Starts the compose side of bench/peers.py (docker-compose.yml's `web` and `worker-predict`
commands and environment, scratch database and Redis databases) with PREDICT_TIMELINE_DIR
set: each process then stamps every direct-lane prediction's stages with the machine's
monotonic clock (`tasks/observability/timeline.py`). For each client count, a wrk burst;
the stamps of the requests it sent are joined by job id and each stage's duration is
printed as its median and 90th percentile over the burst, in the order a request meets
them:

    web     request -> parsed     Flask's dispatch, the token, request id and metrics hooks,
                                  the body read and validated
            parsed -> checked     the model resolved, the rows checked into an array
            checked -> pushed     the lane message encoded, LPUSH and BRPOP sent
    redis   pushed -> popped      Redis, then the worker's blocked lane thread wakes
    worker  popped -> stacked     the message decoded, batching's wait, routing, the rows stacked
            stacked -> predicted  the model call
            predicted -> answered the payload built, the outcome encoded
    redis   answered -> replied   the outcome stored and pushed (one round trip to Redis),
                                  then the web's blocked request thread wakes
    web     replied -> decoded    the outcome decoded
            decoded -> encoded    the response's JSON and object
            encoded -> returned   the after-request hooks (request id, access line, metrics)
    worker  answered -> done      Redis's replies read, then the prediction log's hand-over, metrics

`outside` is wrk's p50 less the web's (request -> returned) p50: granian, the kernel's
sockets and wrk. CPU per request by role is read around the burst, as bench/peers.py does.
Every figure moves with the machine's load: compare runs made in one sitting.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import harness
import orjson
import peers

STAGES = (
    ("web", "request", "parsed"),
    ("web", "parsed", "checked"),
    ("web", "checked", "pushed"),
    ("redis", "pushed", "popped"),
    ("worker", "popped", "stacked"),
    ("worker", "stacked", "predicted"),
    ("worker", "predicted", "answered"),
    ("redis", "answered", "replied"),
    ("web", "replied", "decoded"),
    ("web", "decoded", "encoded"),
    ("web", "encoded", "returned"),
)
AFTER = ("worker", "answered", "done")  # off the caller's path


def read_stamps(directory: Path) -> dict[str, dict[str, int]]:
    """job id -> stage -> nanoseconds, from every process's file; the files are emptied."""
    jobs: dict[str, dict[str, int]] = defaultdict(dict)
    for path in directory.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            stamp = orjson.loads(line)
            jobs[stamp["job"]].setdefault(stamp["stage"], stamp["ns"])  # the first pop, if retried
        path.write_bytes(b"")
    return jobs


def durations_us(jobs: dict[str, dict[str, int]], start: str, end: str) -> list[float]:
    spans = [(stamps.get(start), stamps.get(end)) for stamps in jobs.values()]
    return [(last - first) / 1000 for first, last in spans if first is not None and last is not None]


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def print_timeline(clients: int, jobs: dict[str, dict[str, int]], run: harness.WrkRun, cpu: dict) -> None:
    complete = {job: stamps for job, stamps in jobs.items() if "returned" in stamps and "done" in stamps}
    print(f"\n{clients} client(s): {run.requests:,} sent, {run.rate:,.0f} req/s, {len(complete):,} timed")
    print(f"  {'':<8}{'stage':<24}{'p50 µs':>9}{'p90 µs':>9}")
    total_p50 = 0.0
    for where, start, end in (*STAGES, AFTER):
        values = durations_us(complete, start, end)
        p50 = statistics.median(values) if values else float("nan")
        if (where, start, end) != AFTER:
            total_p50 += p50
        print(f"  {where:<8}{start + ' -> ' + end:<24}{p50:>9.1f}{quantile(values, 0.9):>9.1f}")
    web = durations_us(complete, "request", "returned")
    wrk_p50 = harness.percentile(run.histogram, 0.5)
    print(f"  {'':<8}{'sum of the p50s':<24}{total_p50:>9.1f}")
    print(f"  {'web':<8}{'request -> returned':<24}{statistics.median(web):>9.1f}{quantile(web, 0.9):>9.1f}")
    print(f"  {'wrk':<8}{'latency':<24}{wrk_p50:>9.1f}{harness.percentile(run.histogram, 0.9):>9.1f}")
    print(f"  {'':<8}{'outside (wrk - web)':<24}{wrk_p50 - statistics.median(web):>9.1f}")
    print("  CPU µs per request: " + peers.cpu_text(cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="xgb-5", choices=sorted(peers.CASES))
    parser.add_argument("--clients", default="1,32", help="a wrk burst for each count, in this order")
    parser.add_argument("--seconds", type=float, default=8, help="each burst (after a 2 s warm-up)")
    parser.add_argument("--ref", help="run a commit's code (git archive), as bench/peers.py --ref")
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory")
    options = parser.parse_args()
    clients = [int(count) for count in options.clients.split(",")]
    signal.signal(signal.SIGTERM, peers.raise_on_signal)
    scratch = peers.Scratch(Path(tempfile.mkdtemp(prefix="bench-timeline-")), Path())
    stamps_dir = scratch.subdirectory("timeline")
    case = peers.CASES[options.case]
    side = None
    try:
        peers.flush_redis()
        print(f"the stack's code: {peers.use_source(scratch, options.ref)}")
        peers.write_models(scratch.model_dir, [case], {})
        side = peers.compose_side(scratch)
        for launch in side.launches:
            launch.env["PREDICT_TIMELINE_DIR"] = str(stamps_dir)
        peers.wait_until_settled(scratch.model_dir)
        side.start()
        peers.wait_ready([side], [case])
        bench = peers.Bench([side], [case], scratch, argparse.Namespace(warmup_seconds=2))
        bench.wrk(side, case, 2, 32, 2, warm_up=True)
        for count in clients:
            time.sleep(2 * 0.5)  # the stamps of the warm-up (or the last burst) written
            read_stamps(stamps_dir)
            before = bench.cpu_seconds(side)
            run, _ = bench.wrk(side, case, min(2, count), count, options.seconds)
            after = bench.cpu_seconds(side)
            cpu = {role: (after[role] - before.get(role, 0.0)) / run.requests * 1e6 for role in after}
            cpu["wrk"] = run.cpu_s / run.requests * 1e6
            time.sleep(2 * 0.5)
            print_timeline(count, read_stamps(stamps_dir), run, cpu)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        peers.clean_up(scratch, [side] if side else [], None, options.keep)
        if not options.keep:
            shutil.rmtree(scratch.directory, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except peers.BenchError as exc:
        sys.exit(f"\nbench/timeline.py failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted")
