"""Where one synchronous prediction spends its time, stage by stage, in the web and the worker.

    .venv/bin/python bench/timeline.py                           # the working tree: 1 client, then 32
    .venv/bin/python bench/timeline.py --refs HEAD~1,worktree    # a change against what came before
    .venv/bin/python bench/timeline.py --clients 1,8,32 --rounds 5 --seconds 4

Starts, for each of --refs (a commit, exported with git archive, or `worktree`: the working
tree), the compose side of bench/peers.py (docker-compose.yml's `web` and `worker-predict`
commands and environment, a scratch database and Redis databases of its own) with
PREDICT_TIMELINE_DIR set: each process then stamps every synchronous prediction's stages
with the machine's monotonic clock (`tasks/observability/timeline.py`). Each round runs a
wrk burst per client count on every stack, in a rotating order, so that two commits meet
the machine's slow spells alike. The stamps are joined by job id, and each stage's median
over the rounds (or another --quantile: 0.99 shows where the tail comes from) is printed
in the order a request meets them:

    web     request -> parsed      Flask's dispatch, the token and request id hooks, the
                                   body read and validated
            parsed -> checked      the model resolved, the rows checked into an array
            checked -> pushed      the lane message encoded, a predict thread's connection chosen
    wire    pushed -> popped       sent on it, then the worker's blocked serving thread wakes
                                   (over the Redis lane: pushed, then popped)
    worker  popped -> stacked      the message decoded, batching's wait, routing, the rows stacked
            stacked -> predicted   the model call
            predicted -> answered  the payload built, the outcome encoded
    wire    answered -> replied    the outcome sent to Redis to be stored, then on the
                                   connection, then the web's blocked request thread wakes
                                   (over the Redis lane: stored and pushed by Redis)
    web     replied -> decoded     the outcome decoded
            decoded -> encoded     the response's JSON and object
            encoded -> returned    the after-request hooks, the response's headers
    worker  answered -> done       (after the answer) Redis's replies read, the prediction
                                   log's hand-over, metrics

`outside` is wrk's p50 less the web's (request -> returned) p50: granian, the kernel's
sockets and wrk. CPU per request by role is read around each burst, as bench/peers.py
does; the stamps cost the processes some (--no-stamps leaves them out, to compare CPU). A
commit from before the timeline existed shows wrk's figures and CPU alone.
Every figure moves with the machine's load: compare stacks of one run.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import harness
import orjson
import peers

STAGES = (
    ("web", "request", "parsed"),
    ("web", "parsed", "checked"),
    ("web", "checked", "pushed"),
    ("wire", "pushed", "popped"),
    ("worker", "popped", "stacked"),
    ("worker", "stacked", "predicted"),
    ("worker", "predicted", "answered"),
    ("wire", "answered", "replied"),
    ("web", "replied", "decoded"),
    ("web", "decoded", "encoded"),
    ("web", "encoded", "returned"),
)
AFTER = ("worker", "answered", "done")  # off the caller's path
FLUSHED_S = 1.0  # the processes write their stamps every half second
WORKTREE = "worktree"


@dataclass
class Stack:
    ref: str
    scratch: peers.Scratch
    side: peers.Side
    stamps: Path
    jobs: dict[int, dict[str, dict[str, int]]] = field(default_factory=lambda: defaultdict(dict))
    latency: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    rates: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[int, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))


def read_stamps(directory: Path) -> dict[str, dict[str, int]]:
    """job id -> stage -> nanoseconds, from every process's file; the files are emptied."""
    jobs: dict[str, dict[str, int]] = defaultdict(dict)
    for path in directory.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            stamp = orjson.loads(line)
            jobs[stamp["job"]].setdefault(stamp["stage"], stamp["ns"])
        path.write_bytes(b"")
    return jobs


def durations_us(jobs: dict[str, dict[str, int]], start: str, end: str) -> list[float]:
    spans = [(stamps.get(start), stamps.get(end)) for stamps in jobs.values()]
    return [(last - first) / 1000 for first, last in spans if first is not None and last is not None]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def start_stack(ref: str, index: int, case: peers.Case, directory: Path, stamped: bool) -> Stack:
    # Its scratch database is named after the directory's last part: unique per run and stack.
    scratch = peers.Scratch(directory / f"s{index}{directory.name.rsplit('-', 1)[-1].lower()}", Path())
    scratch.directory.mkdir()
    scratch.stacks = index  # its own pair of BENCH_PEERS_REDIS_DBS
    print(f"stack {index + 1}: {peers.use_source(scratch, None if ref == WORKTREE else ref)}", flush=True)
    peers.write_models(scratch.model_dir, [case], {})
    side = peers.compose_side(scratch, key="compose")
    stamps = scratch.subdirectory("timeline")
    for launch in side.launches:
        if stamped:
            launch.env["PREDICT_TIMELINE_DIR"] = str(stamps)
    peers.wait_until_settled(scratch.model_dir)
    side.start()
    return Stack(ref, scratch, side, stamps)


def burst(bench: peers.Bench, stack: Stack, case: peers.Case, clients: int, seconds: float) -> None:
    read_stamps(stack.stamps)  # what an earlier burst left
    before = bench.cpu_seconds(stack.side)
    run, _ = bench.wrk(stack.side, case, min(2, clients), clients, seconds)
    after = bench.cpu_seconds(stack.side)
    cpu = {role: (after[role] - before.get(role, 0.0)) / run.requests * 1e6 for role in after}
    cpu["wrk"] = run.cpu_s / run.requests * 1e6
    time.sleep(FLUSHED_S)
    stack.jobs[clients].update(read_stamps(stack.stamps))
    stack.latency[clients].update(run.histogram)
    stack.rates[clients].append(run.rate)
    stack.cpu[clients].append(cpu)


def print_report(stacks: list[Stack], clients: int, share: float) -> None:
    names = [f"{index + 1}: {stack.ref}" for index, stack in enumerate(stacks)]
    width = max(14, *(len(name) + 2 for name in names))
    print(f"\n{clients} client(s): p{share * 100:g} µs of each stage, over the rounds")
    print(f"  {'':<8}{'stage':<24}" + "".join(f"{name:>{width}}" for name in names))

    def row(where: str, label: str, values: list[float], digits: int = 1) -> None:
        cells = "".join(f"{value:>{width},.{digits}f}" for value in values)
        print(f"  {where:<8}{label:<24}{cells}")

    complete = [
        {
            job: stamps
            for job, stamps in stack.jobs[clients].items()
            if "returned" in stamps and "done" in stamps
        }
        for stack in stacks
    ]
    for where, start, end in (*STAGES, AFTER):
        values = [quantile(durations_us(jobs, start, end), share) for jobs in complete]
        row(where, f"{start} -> {end}", values)
    web = [quantile(durations_us(jobs, "request", "returned"), share) for jobs in complete]
    wrk = [harness.percentile(stack.latency[clients], share) for stack in stacks]
    row("web", "request -> returned", web)
    row("wrk", f"latency p{share * 100:g}", wrk)
    if share != 0.99:
        row("wrk", "latency p99", [harness.percentile(stack.latency[clients], 0.99) for stack in stacks])
    row("", "outside (wrk - web)", [total - inner for total, inner in zip(wrk, web, strict=True)])
    row("wrk", "req/s (median)", [median(stack.rates[clients]) for stack in stacks], 0)
    roles = sorted({role for stack in stacks for burst in stack.cpu[clients] for role in burst})
    for role in roles:
        values = [median([burst.get(role, 0.0) for burst in stack.cpu[clients]]) for stack in stacks]
        row("CPU", f"{role} µs/request", values, 0)
    print(f"  {'':<8}{'timed requests':<24}" + "".join(f"{len(jobs):>{width},}" for jobs in complete))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="xgb-5", choices=sorted(peers.CASES))
    parser.add_argument("--refs", default=WORKTREE, help=f"commits to compare, `{WORKTREE}` the working tree")
    parser.add_argument("--clients", default="1,32", help="a wrk burst for each count, each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="each burst")
    parser.add_argument(
        "--no-stamps",
        action="store_true",
        help="PREDICT_TIMELINE_DIR unset: wrk's figures and CPU alone, without the stamps' own cost",
    )
    parser.add_argument(
        "--quantile", type=float, default=0.5, help="of each stage and of wrk's latency: 0.99 for the tail"
    )
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory")
    options = parser.parse_args()
    refs = [ref.strip() for ref in options.refs.split(",") if ref.strip()]
    clients = [int(count) for count in options.clients.split(",")]
    signal.signal(signal.SIGTERM, peers.raise_on_signal)
    directory = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    case = peers.CASES[options.case]
    stacks: list[Stack] = []
    try:
        peers.flush_redis()
        for index, ref in enumerate(refs):
            stacks.append(start_stack(ref, index, case, directory, not options.no_stamps))
        peers.wait_ready([stack.side for stack in stacks], [case])
        bench = peers.Bench([stack.side for stack in stacks], [case], stacks[0].scratch, options)
        options.warmup_seconds = 2
        bench.warm_up()
        for round_ in range(options.rounds):
            shift = round_ % len(stacks)
            for stack in stacks[shift:] + stacks[:shift]:
                for count in clients:
                    burst(bench, stack, case, count, options.seconds)
            print(f"round {round_ + 1} of {options.rounds} done", flush=True)
        for count in clients:
            print_report(stacks, count, options.quantile)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stack in stacks:
            peers.clean_up(stack.scratch, [stack.side], None, options.keep)
        if options.keep:
            print(f"scratch directory kept: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except peers.BenchError as exc:
        sys.exit(f"\nbench/timeline.py failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted")
