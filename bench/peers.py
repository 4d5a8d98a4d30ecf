"""The serving stack against the peers a user would pick instead, in one interleaved run.

    make bench-peers                      # builds .venv-peers (bench/requirements-peers.txt) first
    make bench-peers BENCH_ARGS="--rounds 1 --seconds 3 --latency-seconds 2"
    .venv/bin/python bench/peers.py --cases xgb-5 --sides compose,plan-fastapi --keep

Sides, all started here and all serving the same model files from one scratch MODEL_DIR:

- compose: the project's web and predict worker started with the commands of
  docker-compose.yml's `web` and `worker-predict` services (read from the file) and their
  environment (its defaults; paths, addresses and ports pointed at scratch ones here),
  each process's output to a file as docker keeps it;
- make-run: `python -m devstack`, what `make run` execs: honcho over the Procfile (web,
  two workers, beat, Flower), its output to a file; stopped with SIGTERM, as Ctrl-C does;
- plan-fastapi: the plan's design, bench/peers/plan_fastapi.py under `uvicorn --workers 2`
  (access log on, as FastAPI's docs run it), from the peers' venv;
- mlserver, mlserver-batch: MLServer 1.7.1 with mlserver-xgboost on its V2 route
  (`POST /v2/models/<name>/infer`, an FP32 tensor [1, n_features]), default settings but
  its addresses (so parallel_workers 1: one inference process beside the HTTP one, and
  XGBoost's OpenMP thread per core; --mlserver-omp-threads 1 for one), without and with
  adaptive batching (max_batch_size 64, max_batch_time 2 ms); MLServer has no torch
  runtime, so it sits out the LSTM case;
- mlserver-tuned: MLServer as a user who cares about latency runs it: parallel_workers 0
  (inference in the HTTP process, no hop to a pool), debug false (its production mode:
  no per-request access line) and OMP_NUM_THREADS=1 (one row gains nothing from
  XGBoost's threads, which cost a wake-up each);
- flask-gunicorn, flask-granian: the limit an out-of-process design cannot beat, shown
  for reference: a bare Flask app predicting in the web process (bench/peers/flask_limit.py)
  under gunicorn (2 workers, 16 threads, --reuse-port: the project's server until granian) and
  under granian (WSGI, 2 workers, 8 blocking threads).

Two more, run only when --sides names them and compared with the compose side, tell what a
feature of the stack costs its callers:

- compose-nolog: the compose stack with PREDICTION_LOG=off (the prediction log's cost);
- compose-shadow: the compose stack with, for every case's model, a shadow challenger of the
  same kind and cost (the case's XGBoost shape trained from another seed, another LSTM
  checkpoint of the same architecture), kept with `flask --app web models keep` and set with
  `PUT .../models/<name>/release` once the side is ready, and held loaded by its worker
  before its first burst (shadow mode's cost to the champion's callers).

Cases, trained into the scratch MODEL_DIR at the start: xgb-5 (XGBoost, 100 trees of
depth 6, 5 features, one row per request), xgb-500 (500 trees of depth 8) and lstm-costly
(the project's LSTM checkpoint, 2 layers of 320, one sequence of 60 x 5 per request, about
5 ms in-process; its sidecar sets its batching: --lstm-max-batch, --lstm-batch-wait-s).

Measurement, every figure from wrk: after a warm-up, for each round, each case, each
side in a rotating order, a single-client burst (`wrk -t1 -c1`) and a 32-client burst
(`wrk -t2 -c32`). p50 and p99 come from wrk's latency histograms (a Lua done() hook writes
them out; they include wrk's coordinated-omission correction, as its --latency figures
do), merged over the rounds; req/s is wrk's. Around each 32-client burst: the CPU time of
each of the side's processes by role (the compose service or Procfile entry, uvicorn,
mlserver and its inference pool), of Redis (INFO cpu) and PostgreSQL (every `postgres`
process: both servers are the machine's, so others' work counts too) and of wrk, per
request served; and how wrk's 32 connections spread over the serving processes. Ratios
against plan-fastapi and against MLServer's best side at each figure (mlserver-tuned
included); throughput ratios are the median of the rounds' ratios, since the sides of
one round run close together on a shared machine. Any non-2xx answer or socket error fails the run.

The stacks run the working tree's code, or with --ref a commit's (`--ref HEAD`: exported
with git archive into the scratch directory, so that edits made in the tree during a run,
by you or anyone sharing it, cannot reach a process that starts or restarts in it).

Needs wrk (Debian's), Redis and PostgreSQL (scratch databases created, migrated and
dropped here: BENCH_PG_ADMIN_URL); uses the Redis databases BENCH_PEERS_REDIS_DBS (6 to 11:
a pair, broker and results, for each stack side in the order above, so three of them at
most) and flushes them. Everything it started is stopped at the end, on Ctrl-C and on failure
too (then with the last lines of the failing side's logs).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness
import numpy as np
import psutil
import redis
import yaml
from sqlalchemy import create_engine, text

from config import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project's venv
PEER_APPS = ROOT / "bench" / "peers"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Broker and results of each stack side (compose, make-run, compose-nolog, compose-shadow: a pair
# for each one run, in that order). Others in use: 0 and 1 (make run's defaults), 12 and 13
# (bench/ingest.py), 14 and 15 (tests/conftest.py).
REDIS_DBS = [int(db) for db in os.environ.get("BENCH_PEERS_REDIS_DBS", "6,7,8,9,10,11").split(",")]
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
# Compose refuses to start without API_TOKEN, so its side checks one; wrk sends it to
# every side (the others ignore it).
API_TOKEN = "bench-peers-token"  # noqa: S105 - a scratch stack's, known to the benchmark alone
N_FEATURES = 5
SEQUENCE_LENGTH = 60
LSTM_MIN_MS = 3.0
# 2 x 320 over 60 steps: about 5 ms a sequence here, 1.5 ms per sequence in a batch of 32.
LSTM_HIDDEN = 320
# Its batching, as README's "Batching per model" advises for a costly model (tried on
# 2026-12-06: 8 served the most, 16 and 32 no more, and the defaults 64 and 1 ms about as
# much, all within the noise of two rounds); 0 and -1: none, the stack's defaults.
LSTM_MAX_BATCH = 8
LSTM_BATCH_WAIT_S = 0.002
SEED = 7
# The settings of the project (config.py) and prometheus_client's directory: none is
# inherited from the shell, so every side runs with what is set here.
PROJECT_VARIABLES = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
SIDES = (
    "compose",
    "make-run",
    "plan-fastapi",
    "mlserver",
    "mlserver-batch",
    "mlserver-tuned",
    "flask-gunicorn",
    "flask-granian",
)
# Run only when asked (--sides), beside the compose side: the compose stack with
# PREDICTION_LOG=off tells what the prediction log costs, with a shadow challenger for every
# model what shadow mode costs the champion's callers.
OPTIONAL_SIDES = ("compose-nolog", "compose-shadow")
LABELS = {
    "compose": "stack (compose)",
    "make-run": "stack (make run)",
    "plan-fastapi": "plan-fastapi",
    "mlserver": "mlserver",
    "mlserver-batch": "mlserver-batch",
    "mlserver-tuned": "mlserver-tuned",
    "flask-gunicorn": "flask-limit (gunicorn)",
    "flask-granian": "flask-limit (granian)",
    "compose-nolog": "stack (compose, no log)",
    "compose-shadow": "stack (compose, shadow)",
}
MLSERVER_SIDES = ("mlserver", "mlserver-batch", "mlserver-tuned")
# mlserver-tuned's settings: what MLServer's documentation says about latency (parallel
# inference off for a model that answers in microseconds, debug off in production) and
# one OpenMP thread.
MLSERVER_TUNED = {"parallel_workers": 0, "debug": False}
STACK_SIDES = ("compose", "make-run", "compose-nolog", "compose-shadow")  # two of REDIS_DBS each


class BenchError(RuntimeError):
    pass


# Models


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # in MODEL_DIR
    kind: str
    about: str

    @property
    def stem(self) -> str:
        return self.file.rsplit(".", 1)[0]

    def features(self) -> list:
        """One request's input: a row of 5 numbers, or one 60 x 5 sequence."""
        rng = np.random.default_rng(SEED)
        shape = (1, N_FEATURES) if self.kind == "xgboost" else (SEQUENCE_LENGTH, N_FEATURES)
        return np.round(rng.normal(size=shape), 4).tolist()


CASES = {
    "xgb-5": Case("xgb-5", "xgb_5.json", "xgboost", "XGBoost, 100 trees of depth 6, 5 features, one row"),
    "xgb-500": Case(
        "xgb-500", "xgb_500.json", "xgboost", "XGBoost, 500 trees of depth 8, 5 features, one row"
    ),
    "lstm-costly": Case("lstm-costly", "lstm_costly.pt", "lstm", "LSTM, 2 layers, one sequence of 60 x 5"),
}
XGBOOST_SHAPES = {"xgb-5": (100, 6), "xgb-500": (500, 8)}


def write_models(model_dir: Path, cases: list[Case], lstm_batching: dict, seed: int = SEED) -> None:
    """Every case's model file and its sidecar (sidecar first, as models/training.py does),
    each written atomically; prints what one prediction costs in-process. `lstm_batching`:
    the LSTM sidecar's `max_batch` and `batch_wait_s` (README, "Batching per model");
    `seed`: another one gives models of the same shapes and cost (the shadow challengers)."""
    model_dir.mkdir(parents=True)
    for case in cases:
        if case.kind == "xgboost":
            trees, depth = XGBOOST_SHAPES[case.name]
            booster = train_xgboost(trees, depth, seed)
            write_sidecar(model_dir / case.file, {"type": "xgboost", "n_features": N_FEATURES})
            harness.atomic_write(model_dir / case.file, bytes(booster.save_raw(raw_format="json")))
            print(f"  {case.name}: one row {xgboost_cost_ms(booster):.3f} ms in-process (1 thread)")
        else:
            model = costly_lstm(seed)
            meta = {"type": "lstm", "n_features": N_FEATURES, "sequence_length": SEQUENCE_LENGTH}
            meta.update(lstm_batching)
            write_sidecar(model_dir / case.file, meta)
            write_checkpoint(model, model_dir / case.file)


def lstm_batching(options: argparse.Namespace) -> dict:
    batching: dict = {}
    if options.lstm_max_batch > 0:
        batching["max_batch"] = options.lstm_max_batch
    if options.lstm_batch_wait_s >= 0:
        batching["batch_wait_s"] = options.lstm_batch_wait_s
    return batching


def write_sidecar(model_path: Path, meta: dict) -> None:
    harness.atomic_write(model_path.with_name(model_path.name + ".meta.json"), json.dumps(meta).encode())


def train_xgboost(trees: int, depth: int, seed: int = SEED):
    import xgboost

    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(20_000, N_FEATURES))
    signal_ = rows @ np.array([0.8, 0.5, -0.3, 0.1, 0.2]) + 0.3 * np.sin(3 * rows[:, 3])
    labels = (signal_ + rng.normal(scale=0.5, size=len(rows)) > 0).astype(np.float64)
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "seed": seed, "nthread": 2}
    return xgboost.train(params, xgboost.DMatrix(rows, label=labels), num_boost_round=trees)


def xgboost_cost_ms(booster) -> float:
    booster.set_param({"nthread": 1})
    row = np.ones((1, N_FEATURES))
    return median_ms(lambda: booster.inplace_predict(row), 200)


def costly_lstm(seed: int = SEED):
    """The project's LSTM, 2 layers of LSTM_HIDDEN, the same in every run (for one seed);
    warns when one sequence costs less than LSTM_MIN_MS with one torch thread, as a worker
    runs it."""
    import torch

    from models.lstm import LSTMForecaster

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = LSTMForecaster(input_size=N_FEATURES, hidden_size=LSTM_HIDDEN, num_layers=2).eval()
    one, per_sequence = lstm_cost_ms(model)
    print(
        f"  lstm-costly: hidden_size {LSTM_HIDDEN}: one sequence {one:.2f} ms, "
        f"per sequence in a batch of 32 {per_sequence:.2f} ms (torch, 1 thread)"
    )
    if one < LSTM_MIN_MS:
        print(f"  (below the {LSTM_MIN_MS} ms a costly model should take: a fast machine)")
    return model


def lstm_cost_ms(model) -> tuple[float, float]:
    import torch

    rng = np.random.default_rng(SEED)
    one = torch.from_numpy(rng.normal(size=(1, SEQUENCE_LENGTH, N_FEATURES)).astype(np.float32))
    batch = torch.from_numpy(rng.normal(size=(32, SEQUENCE_LENGTH, N_FEATURES)).astype(np.float32))
    with torch.inference_mode():
        return median_ms(lambda: model(one), 40), median_ms(lambda: model(batch), 10) / 32


def write_checkpoint(model, path: Path) -> None:
    from models.lstm import save_checkpoint

    buffer = io.BytesIO()
    save_checkpoint(model, buffer)
    harness.atomic_write(path, buffer.getvalue())


def median_ms(call: Callable[[], object], repeat: int) -> float:
    for _ in range(3):
        call()
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def wait_until_settled(model_dir: Path, settle_s: float = 1.5) -> None:
    # The model store leaves alone a file modified in the last second (models/store.py,
    # settle_s): a worker that starts sooner would answer 503 model_loading for a while.
    newest = max(path.stat().st_mtime for path in model_dir.iterdir())
    time.sleep(max(0.0, newest + settle_s - time.time()))


# Sides


@dataclass
class Launch:
    role: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    process: subprocess.Popen | None = None


@dataclass
class Side:
    key: str
    port: int
    launches: list[Launch]
    v2: bool = False  # the Open Inference Protocol route (MLServer) instead of /api/v1/ml/predict
    kinds: tuple[str, ...] = ("xgboost", "lstm")
    # A role by command line, for a launch whose descendants play several (honcho's).
    role_of: Callable[[psutil.Process], str] | None = None
    # SIGTERM to the process alone, not its group: devstack stops honcho itself.
    whole_group: bool = True
    roles: dict[tuple[int, float], str] = field(default_factory=dict)  # (pid, started) -> role

    @property
    def label(self) -> str:
        return LABELS[self.key]

    def serves(self, case: Case) -> bool:
        return case.kind in self.kinds

    def path(self, case: Case) -> str:
        return f"/v2/models/{case.stem}/infer" if self.v2 else "/api/v1/ml/predict"

    def body(self, case: Case) -> str:
        features = case.features()
        if self.v2:
            tensor = {"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP32", "data": features[0]}
            return json.dumps({"inputs": [tensor]})
        return json.dumps({"model_name": case.file, "features": features})

    def start(self) -> None:
        for launch in self.launches:
            launch.process = harness.start_process(launch.argv, launch.env, launch.cwd, launch.log)

    def processes(self) -> list[subprocess.Popen]:
        return [launch.process for launch in self.launches if launch.process is not None]

    def members(self) -> dict[str, list[psutil.Process]]:
        """This side's live processes by role."""
        roles: dict[str, list[psutil.Process]] = {}
        for launch in self.launches:
            for member in harness.process_tree(launch.process) if launch.process else []:
                roles.setdefault(self.role(member, launch), []).append(member)
        return roles

    def role(self, member: psutil.Process, launch: Launch) -> str:
        if self.role_of is None:
            return launch.role
        try:
            key = (member.pid, member.create_time())
        except psutil.NoSuchProcess:
            return "gone"
        if key not in self.roles:
            self.roles[key] = self.role_of(member)
        return self.roles[key]

    def exited(self) -> Launch | None:
        return next((launch for launch in self.launches if launch.process.poll() is not None), None)


@dataclass
class Scratch:
    """Where everything of one run lives, and what the run created outside it."""

    directory: Path
    peers_bin: Path
    source: Path = ROOT  # the project's code the stacks run: the working tree, or --ref's snapshot
    databases: dict[str, str] = field(default_factory=dict)  # name -> URL
    stacks: int = 0  # stack sides given a pair of REDIS_DBS so far

    def python_path(self) -> dict[str, str]:
        """PYTHONPATH for a snapshot: ahead of the venv's editable install (the working tree)."""
        return {} if self.source == ROOT else {"PYTHONPATH": str(self.source)}

    @property
    def model_dir(self) -> Path:
        return self.directory / "model_store"  # not "models": that would shadow the package

    @property
    def challengers(self) -> Path:
        """compose-shadow's challenger files, outside MODEL_DIR: no side serves them as models."""
        return self.directory / "challengers"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def redis_urls(self) -> tuple[str, str]:
        """The next pair of REDIS_DBS, a stack side's broker and results."""
        first = 2 * self.stacks
        if first + 2 > len(REDIS_DBS):
            raise BenchError(
                f"BENCH_PEERS_REDIS_DBS names {len(REDIS_DBS)} Redis databases: too few for "
                f"{self.stacks + 1} stack sides, two each"
            )
        self.stacks += 1
        return f"{REDIS_URL}/{REDIS_DBS[first]}", f"{REDIS_URL}/{REDIS_DBS[first + 1]}"

    def subdirectory(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def database(self, side: str) -> str:
        name = f"bench_peers_{self.directory.name.rsplit('-', 1)[-1].lower()}_{side.replace('-', '_')}"
        self.databases[name] = harness.scratch_database(PG_ADMIN, name)
        return self.databases[name]


def base_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in PROJECT_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def compose_side(scratch: Scratch, key: str = "compose", **env_: str) -> Side:
    """The web and worker-predict services of docker-compose.yml, their commands and
    environment as written there; only paths, addresses, the database and the Redis
    databases differ (and `env_`, as a .env would set them)."""
    services = yaml.safe_load((scratch.source / "docker-compose.yml").read_text())["services"]
    port = harness.free_port()
    database_url = scratch.database(key)
    given = {"DATABASE_URL": database_url, "API_TOKEN": API_TOKEN, **env_}  # what .env sets
    directory = scratch.subdirectory(key)
    paths = {
        "MODEL_DIR": scratch.model_dir,
        "SPOOL_DIR": directory / "spool",
        "METRICS_DIR": directory / "metrics",
        "MODEL_ARCHIVE_DIR": directory / "model_archive",  # the stack's model_archive volume
    }
    broker, results = scratch.redis_urls()
    overrides = {
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": results,
        "WEB_BIND": f"127.0.0.1:{port}",
        # This PostgreSQL has no TimescaleDB; compose's image does (TIMESCALEDB=require).
        "TIMESCALEDB": "auto",
        # The image's (Dockerfile ENV): the checkout is /app there, the working directory.
        "PYTHONPATH": str(scratch.source),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    launches = []
    for service in ("web", "worker-predict"):  # each process's role: its service's name
        env = {**base_env(), **service_env(services[service], given, paths), **overrides}
        argv = service_command(services[service], given)
        launches.append(Launch(service, argv, env, scratch.source, log_path(scratch, f"{key}-{service}")))
    # The migrate service's job, before the others start (compose: depends_on).
    migrate = services["migrate"]
    env = {**base_env(), **service_env(migrate, given, paths), **overrides}
    run_checked(service_command(migrate, given), env, scratch.source, "compose's migrate service")
    return Side(key, port, launches)


_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${NAME:-default} and ${NAME:?error} with only `given` set, as in a .env
    that sets what compose requires and leaves every default alone."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        if name in given:
            return given[name]
        if operator and operator.endswith("?"):
            raise BenchError(f"docker-compose.yml requires {name} ({argument}); bench/peers.py sets no value")
        return argument if operator else ""

    return _COMPOSE_VARIABLE.sub(one, value)


def service_env(service: dict, given: dict[str, str], paths: dict[str, Path]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = {name: interpolate(str(value), given) for name, value in raw.items() if value is not None}
    # Container paths (MODEL_DIR=/app/model_store, PROMETHEUS_MULTIPROC_DIR under
    # METRICS_DIR, ...) become the scratch directory's.
    for variable, local in paths.items():
        container = env.get(variable)
        for name, value in env.items():
            if container and (value == container or value.startswith(container + "/")):
                env[name] = str(local) + value[len(container) :]
        env[variable] = str(local)
    unmapped = {name: value for name, value in env.items() if value == "/app" or value.startswith("/app/")}
    if unmapped:
        raise BenchError(f"docker-compose.yml sets container paths bench/peers.py does not map: {unmapped}")
    return env


def service_command(service: dict, given: dict[str, str]) -> list[str]:
    command = service.get("command")
    if not command:
        raise BenchError("a compose service without a command (the image's CMD): bench/peers.py needs one")
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    return [interpolate(part, given) for part in argv]


def make_run_side(scratch: Scratch) -> Side:
    port = harness.free_port()
    directory = scratch.subdirectory("make-run")
    broker, results = scratch.redis_urls()
    env = {
        **base_env(),
        "DATABASE_URL": scratch.database("make-run"),  # devstack migrates it
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": results,
        "WEB_BIND": f"127.0.0.1:{port}",
        "FLOWER_PORT": str(harness.free_port()),
        "MODEL_DIR": str(scratch.model_dir),
        "SPOOL_DIR": str(directory / "spool"),
        "METRICS_DIR": str(directory / "metrics"),
    }
    argv = [str(BIN / "python"), "-m", "devstack", "--data-dir", str(directory / "data")]
    launch = Launch(
        "honcho", argv, env | scratch.python_path(), scratch.source, log_path(scratch, "make-run")
    )
    return Side("make-run", port, [launch], role_of=procfile_role, whole_group=False)


def procfile_role(member: psutil.Process) -> str:
    """The Procfile entry a process under `make run` belongs to: honcho gives each entry's
    process HONCHO_PROCESS_NAME (`web.1`), which its own children inherit; devstack and
    honcho themselves have none."""
    try:
        name = member.environ().get("HONCHO_PROCESS_NAME")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    return name.rsplit(".", 1)[0] if name else "honcho"


def plan_fastapi_side(scratch: Scratch) -> Side:
    port = harness.free_port()
    argv = [str(scratch.peers_bin / "uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--app-dir", str(PEER_APPS), "plan_fastapi:app"]
    env = {**base_env(), "MODEL_DIR": str(scratch.model_dir)}
    launch = Launch(
        "uvicorn", argv, env, scratch.subdirectory("plan-fastapi"), log_path(scratch, "plan-fastapi")
    )
    return Side("plan-fastapi", port, [launch])


def mlserver_side(
    scratch: Scratch,
    key: str,
    cases: list[Case],
    batching: dict,
    omp_threads: int | None,
    tuning: dict | None = None,
) -> Side:
    """An MLServer model repository: settings.json with its three ports and `tuning`
    (MLServer's defaults otherwise, parallel_workers 1 among them) and one
    model-settings.json per XGBoost case, reading the scratch MODEL_DIR's file."""
    port = harness.free_port()
    repository = scratch.subdirectory(key)
    settings = {
        "host": "127.0.0.1",  # its default is every interface
        "http_port": port,
        "grpc_port": harness.free_port(),
        "metrics_port": harness.free_port(),
        **(tuning or {}),
    }
    (repository / "settings.json").write_text(json.dumps(settings, indent=2))
    for case in cases:
        if case.kind != "xgboost":
            continue
        model = {
            "name": case.stem,
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": str(scratch.model_dir / case.file)},
            **batching,
        }
        (repository / case.stem).mkdir()
        (repository / case.stem / "model-settings.json").write_text(json.dumps(model, indent=2))
    argv = [str(scratch.peers_bin / "mlserver"), "start", str(repository)]
    env = base_env()
    if omp_threads:  # else XGBoost's default: an OpenMP thread per core in each process
        env["OMP_NUM_THREADS"] = str(omp_threads)
    # Its .envs and .metrics directories go to the working directory.
    launch = Launch("mlserver", argv, env, repository, log_path(scratch, key))
    return Side(key, port, [launch], v2=True, kinds=("xgboost",), role_of=mlserver_role(launch))


def mlserver_role(launch: Launch) -> Callable[[psutil.Process], str]:
    # The main process answers HTTP; parallel_workers processes run the model (none: it does).
    return lambda member: "mlserver" if member.pid == launch.process.pid else "mlserver-pool"


def flask_limit_side(scratch: Scratch, server: str) -> Side:
    port = harness.free_port()
    if server == "gunicorn":
        argv = [str(BIN / "gunicorn"), "--no-control-socket", "--reuse-port", "--workers", "2"]
        argv += ["--threads", "16", "--bind", f"127.0.0.1:{port}", "--chdir", str(PEER_APPS)]
        argv.append("flask_limit:create_app()")
    else:
        argv = [str(BIN / "granian"), "--interface", "wsgi", "--factory", "--workers", "2"]
        argv += ["--blocking-threads", "8", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--working-dir", str(PEER_APPS), "flask_limit:create_app"]
    # One OpenMP thread per process, as the project's workers run (models/threads.py).
    env = {**base_env(), "MODEL_DIR": str(scratch.model_dir), "OMP_NUM_THREADS": "1", **scratch.python_path()}
    key = f"flask-{server}"
    launch = Launch("web", argv, env, scratch.subdirectory(key), log_path(scratch, key))
    return Side(key, port, [launch])


def build_sides(keys: list[str], scratch: Scratch, cases: list[Case], options) -> list[Side]:
    threads = options.mlserver_omp_threads
    builders = {
        "compose": lambda: compose_side(scratch),
        "make-run": lambda: make_run_side(scratch),
        "plan-fastapi": lambda: plan_fastapi_side(scratch),
        "mlserver": lambda: mlserver_side(scratch, "mlserver", cases, {}, threads),
        "mlserver-batch": lambda: mlserver_side(
            scratch, "mlserver-batch", cases, {"max_batch_size": 64, "max_batch_time": 0.002}, threads
        ),
        "mlserver-tuned": lambda: mlserver_side(scratch, "mlserver-tuned", cases, {}, 1, MLSERVER_TUNED),
        "flask-gunicorn": lambda: flask_limit_side(scratch, "gunicorn"),
        "flask-granian": lambda: flask_limit_side(scratch, "granian"),
        "compose-nolog": lambda: compose_side(scratch, "compose-nolog", PREDICTION_LOG="off"),
        "compose-shadow": lambda: compose_side(scratch, "compose-shadow"),
    }
    return [builders[key]() for key in keys]


def log_path(scratch: Scratch, name: str) -> Path:
    scratch.logs.mkdir(exist_ok=True)
    return scratch.logs / f"{name}.log"


def run_checked(argv: list[str], env: dict[str, str], cwd: Path, what: str) -> None:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"{what} failed ({shlex.join(argv)}):\n{done.stdout}{done.stderr}")


# Readiness


def post(side: Side, case: Case, timeout: float = 30) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", side.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
        connection.request("POST", side.path(case), side.body(case), headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(sides: list[Side], cases: list[Case], seconds: float = 300) -> None:
    """Until every side answers 200 with a prediction for each of its cases (the stacks
    answer 503 model_loading until a worker has loaded the file)."""
    deadline = time.monotonic() + seconds
    pending = [(side, case) for side in sides for case in cases if side.serves(case)]
    while pending:
        side, case = pending[0]
        if (launch := side.exited()) is not None:
            raise SideFailed(side, f"{launch.argv[0]} exited with {launch.process.returncode}")
        try:
            status, answer = post(side, case)
        except OSError:
            status, answer = 0, b""
        if status == 200 and (b'"predictions"' in answer or b'"outputs"' in answer):
            pending.pop(0)
        elif time.monotonic() > deadline:
            raise SideFailed(
                side, f"no prediction for {case.name} in {seconds:.0f} s: {status} {answer[:300]!r}"
            )
        else:
            time.sleep(0.2)


def api(
    side: Side, method: str, path: str, body: dict | None = None, timeout: float = 30
) -> tuple[int, object]:
    """One call of the stack's API with its token: the status and the JSON answer (its
    text when it is none)."""
    connection = http.client.HTTPConnection("127.0.0.1", side.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(answer)
    except ValueError:
        return response.status, answer[:500].decode(errors="replace")


def release_challengers(side: Side, cases: list[Case], scratch: Scratch, seconds: float = 120) -> None:
    """Every case's challenger (its file in scratch.challengers) set as its model's shadow
    challenger, as an operator does it: `flask --app web models keep` where MODEL_ARCHIVE_DIR
    is writable (compose: the worker-predict container), then PUT .../release; returns once
    the side's worker holds every challenger loaded (GET .../versions), so that its first
    burst already pays for the shadow predictions."""
    worker = next(launch for launch in side.launches if launch.role == "worker-predict")
    pending: dict[str, str] = {}  # model file name -> the challenger's version
    for case in cases:
        argv = [
            str(BIN / "flask"),
            "--app",
            "web",
            "models",
            "keep",
            case.file,
            str(scratch.challengers / case.file),
        ]
        done = subprocess.run(argv, env=worker.env, cwd=scratch.source, capture_output=True, text=True)
        if done.returncode:
            raise SideFailed(side, f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
        version = done.stdout.strip().splitlines()[-1]
        body = {"challenger": version, "mode": "shadow", "reason": "bench/peers.py: shadow mode's cost"}
        status, answer = api(side, "PUT", f"/api/v1/ml/models/{case.file}/release", body)
        if status != 200:
            raise SideFailed(
                side, f"PUT the release of {case.file} (challenger {version}): {status} {answer}"
            )
        pending[case.file] = version
        print(f"  {side.label}: {case.file}'s shadow challenger {version}", flush=True)
    deadline = time.monotonic() + seconds
    while pending:
        for name, version in list(pending.items()):
            status, answer = api(side, "GET", f"/api/v1/ml/models/{name}/versions")
            if status == 200 and any(
                entry["model_version"] == version and entry["loaded"] for entry in answer["versions"]
            ):
                del pending[name]
            elif time.monotonic() > deadline:
                raise SideFailed(
                    side, f"{name}'s challenger {version} not loaded in {seconds:.0f} s: {status} {answer}"
                )
        if pending:
            time.sleep(0.2)


def steady(rates: list[float]) -> bool:
    last, before = rates[-1:], rates[-2:-1]
    return bool(last and before) and 0 < max(last[0], before[0]) <= 1.25 * min(last[0], before[0])


def probe(side: Side, case: Case) -> str:
    """One request right after a failed burst: what the side answers now (wrk counts
    non-2xx answers but keeps none)."""
    try:
        status, answer = post(side, case, timeout=10)
    except OSError as exc:
        return f"a request after it: {exc}"
    return f"a request after it: {status} {answer[:500].decode(errors='replace')}"


class SideFailed(BenchError):
    def __init__(self, side: Side, message: str):
        super().__init__(f"{side.label}: {message}")
        self.side = side


# Measurement


@dataclass
class Figures:
    """One side's figures for one case, over the rounds."""

    single: Counter = field(default_factory=Counter)  # microseconds -> requests, 1 client
    loaded: Counter = field(default_factory=Counter)  # the same at 32 clients
    rates: list[float] = field(default_factory=list)  # req/s at 32 clients, per round
    cpu: list[dict[str, float]] = field(default_factory=list)  # µs per request by role, per round
    spread: list[list[int]] = field(default_factory=list)  # connections per serving process

    def p(self, share: float, loaded: bool = False) -> float:
        return harness.percentile(self.loaded if loaded else self.single, share) / 1000

    def rate(self) -> float:
        return statistics.median(self.rates)

    def cpu_by_role(self) -> dict[str, float]:
        roles = {role for burst in self.cpu for role in burst}
        return {role: statistics.median(burst.get(role, 0.0) for burst in self.cpu) for role in roles}


class Bench:
    def __init__(self, sides: list[Side], cases: list[Case], scratch: Scratch, options):
        self.sides = sides
        self.cases = cases
        self.scratch = scratch
        self.options = options
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.figures = {
            case.name: {side.key: Figures() for side in sides if side.serves(case)} for case in cases
        }
        self.scripts: dict[tuple[str, str], Path] = {}

    def script(self, side: Side, case: Case) -> Path:
        if (side.key, case.name) not in self.scripts:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
            path = self.scratch.subdirectory("wrk") / f"{side.key}-{case.name}.lua"
            self.scripts[side.key, case.name] = harness.wrk_script(path, side.body(case), headers)
        return self.scripts[side.key, case.name]

    def wrk(
        self, side: Side, case: Case, threads: int, clients: int, seconds: float, during=None, warm_up=False
    ):
        """One wrk burst (and what `during` returns, called while it runs); SideFailed
        on any error, or if nothing was answered (in a measured burst)."""
        histogram = self.scratch.subdirectory("wrk") / "histogram.txt"
        url = f"http://127.0.0.1:{side.port}{side.path(case)}"
        cpu_before = harness.children_cpu_seconds()
        process = harness.start_wrk(url, self.script(side, case), threads, clients, seconds, histogram)
        seen = during() if during else None
        try:
            run = harness.finish_wrk(process, histogram, cpu_before)
        except harness.WrkFailed as exc:
            raise SideFailed(
                side, f"wrk -c{clients} on {case.name} failed:\n{exc}{probe(side, case)}"
            ) from None
        if run.requests == 0 and not warm_up:
            raise SideFailed(side, f"wrk -c{clients} on {case.name}: no answer in {seconds:g} s")
        return run, seen

    def warm_up(self) -> None:
        """32 connections on every side and case until two bursts in a row serve within
        25% of each other: plan-fastapi loads a model on its first request in each uvicorn
        worker (the plan's lazy cache), and that must not fall in a measured burst."""
        for case in self.cases:
            for side in self.serving(case):
                rates: list[float] = []
                while not steady(rates) and len(rates) < 8:
                    run, _ = self.wrk(side, case, 2, 32, self.options.warmup_seconds, warm_up=True)
                    rates.append(run.rate)
                if not steady(rates):
                    print(
                        f"warning: {side.label} still unsteady on {case.name} after its warm-up", flush=True
                    )

    def serving(self, case: Case) -> list[Side]:
        return [side for side in self.sides if side.serves(case)]

    def run_round(self, round_: int) -> None:
        for index, case in enumerate(self.cases):
            sides = self.serving(case)
            shift = (round_ + index) % len(sides)
            for side in sides[shift:] + sides[:shift]:
                figures = self.figures[case.name][side.key]
                single, _ = self.wrk(side, case, 1, 1, self.options.latency_seconds)
                figures.single.update(single.histogram)
                self.loaded_burst(side, case, figures)
            rates = ", ".join(
                f"{side.key} {self.figures[case.name][side.key].rates[-1]:,.0f}" for side in sides
            )
            print(f"round {round_ + 1}, {case.name}: req/s at 32 clients: {rates}", flush=True)

    def loaded_burst(self, side: Side, case: Case, figures: Figures) -> None:
        before = self.cpu_seconds(side)
        # A second into the burst, where wrk's 32 connections landed.
        run, spread = self.wrk(
            side, case, 2, 32, self.options.seconds, lambda: self.connection_spread(side, delay=1.0)
        )
        after = self.cpu_seconds(side)
        cpu = {role: (after[role] - before.get(role, 0.0)) / run.requests * 1e6 for role in after}
        cpu["wrk"] = run.cpu_s / run.requests * 1e6
        figures.loaded.update(run.histogram)
        figures.rates.append(run.rate)
        figures.cpu.append(cpu)
        figures.spread.append(spread)

    def cpu_seconds(self, side: Side) -> dict[str, float]:
        used = {role: harness.cpu_seconds(members) for role, members in side.members().items()}
        # Shared servers: whatever else uses them in the meantime is counted too.
        used["redis"] = harness.redis_cpu_seconds(self.redis)
        used["postgres"] = harness.postgres_cpu_seconds()
        return used

    @staticmethod
    def connection_spread(side: Side, delay: float) -> list[int]:
        """wrk's connections per process that serves them: a supervisor (gunicorn's
        master, uvicorn's, granian's) holds the socket too, but its children accept."""
        time.sleep(delay)
        holders: dict[int, int] = {}
        members = [member for group in side.members().values() for member in group]
        for member in members:
            try:
                connections = member.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            mine = [c for c in connections if c.laddr and c.laddr.port == side.port]
            if mine:
                holders[member.pid] = sum(c.status == psutil.CONN_ESTABLISHED for c in mine)
        supervisors = set()
        for member in members:
            if member.pid in holders:
                try:
                    if any(child.pid in holders for child in member.children(recursive=True)):
                        supervisors.add(member.pid)
                except psutil.NoSuchProcess:
                    pass
        return sorted((count for pid, count in holders.items() if pid not in supervisors), reverse=True)


# Report


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def median_ratio(own: list[float], reference: list[float]) -> float:
    # The sides of one round ran minutes apart at most: their ratio is the least disturbed
    # by the shared machine's slow spells.
    return statistics.median(a / b for a, b in zip(own, reference, strict=True))


def cpu_text(cpu: dict[str, float]) -> str:
    """The side's roles, costliest first, then the shared servers; wrk's own apart."""
    shared = ("redis", "postgres")
    own = sorted(((value, role) for role, value in cpu.items() if role not in (*shared, "wrk")), reverse=True)
    parts = [f"{role} {value:,.0f}" for value, role in own if value >= 1]
    parts += [f"{role} {cpu[role]:,.0f}" for role in shared if role in cpu]
    return " + ".join(parts) + f" = {cpu_total(cpu):,.0f} (wrk {cpu.get('wrk', 0):,.0f})"


def cpu_total(cpu: dict[str, float]) -> float:
    return sum(value for role, value in cpu.items() if role != "wrk")


@dataclass
class Comparison:
    """One side against a reference side: latency ratios (<1 is faster than the
    reference) and the throughput ratio (>1 serves more)."""

    p50: float
    p99: float
    rate: float
    p99_loaded: float


def compare(mine: Figures, reference: Figures) -> Comparison:
    return Comparison(
        mine.p(0.5) / reference.p(0.5),
        mine.p(0.99) / reference.p(0.99),
        median_ratio(mine.rates, reference.rates),
        mine.p(0.99, True) / reference.p(0.99, True),
    )


def mlserver_best(
    figures: dict[str, Figures],
) -> tuple[dict[str, str], Callable[[Figures], Comparison]] | None:
    """Which of the MLServer sides is best at each figure, and a comparison against the
    best one for each."""
    present = {key: figures[key] for key in MLSERVER_SIDES if key in figures}
    if not present:
        return None
    lowest = lambda figure: min(present, key=figure)  # noqa: E731 - the side with the lowest value
    chosen = {
        "p50": lowest(lambda key: present[key].p(0.5)),
        "p99": lowest(lambda key: present[key].p(0.99)),
        "req/s": max(present, key=lambda key: present[key].rate()),
        "p99@32": lowest(lambda key: present[key].p(0.99, True)),
    }

    def against(mine: Figures) -> Comparison:
        return Comparison(
            mine.p(0.5) / present[chosen["p50"]].p(0.5),
            mine.p(0.99) / present[chosen["p99"]].p(0.99),
            median_ratio(mine.rates, present[chosen["req/s"]].rates),
            mine.p(0.99, True) / present[chosen["p99@32"]].p(0.99, True),
        )

    return chosen, against


def print_case(case: Case, figures: dict[str, Figures]) -> list[list[str]]:
    """The case's tables; returns its rows of the markdown summary."""
    print(f"\n== {case.name}: {case.about} ==")
    print_figures(figures)
    references = {}
    if "plan-fastapi" in figures:
        references["plan-fastapi"] = lambda mine: compare(mine, figures["plan-fastapi"])
    if (best := mlserver_best(figures)) is not None:
        chosen, references["MLServer's best"] = best
        print("  MLServer's best: " + ", ".join(f"{figure} {key}" for figure, key in chosen.items()))
    comparisons = {
        name: {key: against(figure) for key, figure in figures.items()}
        for name, against in references.items()
    }
    for name, by_side in comparisons.items():
        print_comparisons(name, by_side)
    rows = []
    for key, figure in figures.items():
        row = [
            case.name,
            LABELS[key],
            f"{figure.p(0.5):.2f}",
            f"{figure.p(0.99):.2f}",
            f"{figure.rate():,.0f}",
        ]
        row += [f"{figure.p(0.99, True):.1f}", f"{cpu_total(figure.cpu_by_role()):,.0f}"]
        for name in ("plan-fastapi", "MLServer's best"):
            comparison = comparisons.get(name, {}).get(key)
            row += [f"{comparison.p50:.2f}x", f"{comparison.rate:.2f}x"] if comparison else ["-", "-"]
        rows.append(row)
    return rows


def print_figures(figures: dict[str, Figures]) -> None:
    print(f"{'':<24}{'1 client':>16}   {'32 clients':>15}")
    print(
        f"{'side':<24}{'p50 ms':>8}{'p99 ms':>8}   {'req/s':>7}{'p99 ms':>8}  {'conns':<7}CPU µs per request"
    )
    for key, figure in figures.items():
        spread = "/".join(str(count) for count in figure.spread[-1])
        print(
            f"{LABELS[key]:<24}{figure.p(0.5):>8.2f}{figure.p(0.99):>8.2f}   {figure.rate():>7,.0f}"
            f"{figure.p(0.99, True):>8.1f}  {spread:<7}{cpu_text(figure.cpu_by_role())}"
        )
    print("  conns: wrk's 32 connections per serving process in the last round; CPU: medians of the rounds")


def print_comparisons(name: str, comparisons: dict[str, Comparison]) -> None:
    print(f"\nagainst {name} (latency: below 1 is faster; req/s: above 1 serves more)")
    print(f"{'side':<24}{'p50':>8}{'p99':>8}   {'req/s':>7}{'p99@32':>8}")
    for key, comparison in comparisons.items():
        print(
            f"{LABELS[key]:<24}{comparison.p50:>7.2f}x{comparison.p99:>7.2f}x   "
            f"{comparison.rate:>6.2f}x{comparison.p99_loaded:>7.2f}x"
        )


def print_make_run_against_compose(bench: Bench) -> None:
    print("\nmake run / compose at 32 clients (the project requires make run to lose at most 10%):")
    for case in bench.cases:
        figures = bench.figures[case.name]
        if "make-run" in figures and "compose" in figures:
            rate = median_ratio(figures["make-run"].rates, figures["compose"].rates)
            within = "yes" if rate >= 0.90 else "NO"
            p99 = figures["make-run"].p(0.99, True) / figures["compose"].p(0.99, True)
            print(f"  {case.name:<12} req/s {rate:.2f}x, p99 {p99:.2f}x   at most 10% lost: {within}")


def print_log_cost(bench: Bench) -> None:
    if not any("compose-nolog" in bench.figures[case.name] for case in bench.cases):
        return
    print("\nthe prediction log's cost, compose / compose-nolog:")
    for case in bench.cases:
        figures = bench.figures[case.name]
        if "compose-nolog" in figures and "compose" in figures:
            rate = median_ratio(figures["compose"].rates, figures["compose-nolog"].rates)
            p50 = figures["compose"].p(0.5, False) / figures["compose-nolog"].p(0.5, False)
            print(f"  {case.name:<12} req/s {rate:.2f}x, p50 {p50:.2f}x")


def print_shadow_cost(bench: Bench) -> None:
    if not any("compose-shadow" in bench.figures[case.name] for case in bench.cases):
        return
    print("\nshadow mode's cost to the champion's callers, compose-shadow vs compose (shadow / compose):")
    for case in bench.cases:
        figures = bench.figures[case.name]
        if "compose-shadow" in figures and "compose" in figures:
            shadow, plain = figures["compose-shadow"], figures["compose"]
            p50, p50_loaded = (ratio(shadow.p(0.5, at), plain.p(0.5, at)) for at in (False, True))
            rate = median_ratio(shadow.rates, plain.rates)
            print(
                f"  {case.name:<12} p50 {shadow.p(0.5):.2f} vs {plain.p(0.5):.2f} ms ({p50}); at 32 clients: "
                f"p50 {shadow.p(0.5, True):.1f} vs {plain.p(0.5, True):.1f} ms ({p50_loaded}), "
                f"req/s {shadow.rate():,.0f} vs {plain.rate():,.0f} ({rate:.2f}x)"
            )


def print_summary(rows: list[list[str]]) -> None:
    header = ["case", "side", "p50 ms", "p99 ms", "req/s (32 clients)", "p99 ms (32)", "CPU µs/req (no wrk)"]
    header += ["p50 vs plan-fastapi", "req/s vs plan-fastapi", "p50 vs MLServer", "req/s vs MLServer"]
    print("\nSummary (markdown):\n")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    previous = None
    for row in rows:
        shown = ["" if row[0] == previous else row[0], *row[1:]]
        previous = row[0]
        print("| " + " | ".join(shown) + " |")


def print_predictions_logged(scratch: Scratch) -> None:
    for name, url in scratch.databases.items():
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                count = connection.scalar(text("SELECT count(*) FROM prediction_log"))
                shadows = ""
                if name.endswith("_compose_shadow"):
                    shadow = connection.scalar(
                        text("SELECT count(*) FROM prediction_log WHERE role = 'shadow'")
                    )
                    shadows = f" ({shadow:,} of them shadow predictions)"
            print(f"predictions logged in {name}: {count:,}{shadows}")
        except Exception as exc:  # a side that never migrated: say so, clean up anyway
            print(f"predictions logged in {name}: unknown ({type(exc).__name__})")
        finally:
            engine.dispose()


# Main


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="each 32-client burst")
    parser.add_argument("--latency-seconds", type=float, default=5, help="each single-client burst")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="per side and case, before round 1")
    parser.add_argument("--cases", default=",".join(CASES), help=f"a subset of {','.join(CASES)}")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"a subset of {','.join(SIDES)}, and {','.join(OPTIONAL_SIDES)} (the log's cost, shadow mode's)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory (logs, models)")
    parser.add_argument(
        "--lstm-max-batch",
        type=int,
        default=LSTM_MAX_BATCH,
        help="the LSTM sidecar's max_batch (0: none, the stack's PREDICT_MAX_BATCH)",
    )
    parser.add_argument(
        "--lstm-batch-wait-s",
        type=float,
        default=LSTM_BATCH_WAIT_S,
        help="the LSTM sidecar's batch_wait_s (negative: none, the stack's PREDICT_BATCH_WAIT_S)",
    )
    parser.add_argument(
        "--ref",
        help="run the stacks from this commit (git archive into the scratch directory) instead of the "
        "working tree, so edits made during a long run cannot reach a process started or restarted in it",
    )
    parser.add_argument("--peers-venv", type=Path, default=ROOT / ".venv-peers")
    parser.add_argument(
        "--mlserver-omp-threads",
        type=int,
        help="OMP_NUM_THREADS for mlserver and mlserver-batch (default: unset, XGBoost's one thread "
        "per core; mlserver-tuned runs with 1)",
    )
    options = parser.parse_args()
    options.cases = subset(options.cases, CASES, "case")
    options.sides = subset(options.sides, (*SIDES, *OPTIONAL_SIDES), "side")
    return options


def subset(given: str, known, what: str) -> list[str]:
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise SystemExit(f"unknown {what}(s) {unknown}; choose from {', '.join(known)}")
    return [name for name in known if name in chosen]  # the canonical order


def check_tools(options: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/peers.py needs wrk: apt-get install wrk")
    peers = {"plan-fastapi", *MLSERVER_SIDES} & set(options.sides)
    if peers and not (options.peers_venv / "bin" / "mlserver").exists():
        raise SystemExit(
            f"no peers' venv at {options.peers_venv}: `make bench-peers` builds it from "
            "bench/requirements-peers.txt (or leave out --sides " + ",".join(sorted(peers)) + ")"
        )
    if "flask-granian" in options.sides and not (BIN / "granian").exists():
        raise SystemExit(f"no {BIN / 'granian'}: {BIN / 'pip'} install granian==2.8.9")
    stacks = [key for key in options.sides if key in STACK_SIDES]
    if 2 * len(stacks) > len(REDIS_DBS):  # said before any of them is flushed
        raise SystemExit(
            f"{', '.join(stacks)}: a broker and a results Redis database each, {2 * len(stacks)} in all; "
            f"BENCH_PEERS_REDIS_DBS names {len(REDIS_DBS)} ({','.join(map(str, REDIS_DBS))})"
        )


def flush_redis() -> None:
    for db in REDIS_DBS:
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


def raise_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    options = parse_options()
    check_tools(options)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, raise_on_signal)
    signal.signal(signal.SIGHUP, raise_on_signal)
    scratch = Scratch(Path(tempfile.mkdtemp(prefix="bench-peers-")), options.peers_venv / "bin")
    cases = [CASES[name] for name in options.cases]
    sides: list[Side] = []
    failed: Side | None = None
    try:
        flush_redis()
        print(f"the stacks' code: {use_source(scratch, options.ref)}")
        print(f"models in {scratch.model_dir}:", flush=True)
        write_models(scratch.model_dir, cases, lstm_batching(options))
        if "compose-shadow" in options.sides:
            print(f"compose-shadow's challengers in {scratch.challengers} (another seed):", flush=True)
            write_models(scratch.challengers, cases, lstm_batching(options), seed=SEED + 1)
        sides = build_sides(options.sides, scratch, cases, options)
        cases = [case for case in cases if any(side.serves(case) for side in sides)]
        wait_until_settled(scratch.model_dir)
        print_commands(sides)
        for side in sides:
            side.start()
        wait_ready(sides, cases)
        for side in sides:
            if side.key == "compose-shadow":
                release_challengers(side, cases, scratch)
        bench = Bench(sides, cases, scratch, options)
        print(f"all sides ready after {time.monotonic() - started:.0f} s; warming up", flush=True)
        bench.warm_up()
        for round_ in range(options.rounds):
            bench.run_round(round_)
        rows = []
        for case in cases:
            rows += print_case(case, bench.figures[case.name])
        print_make_run_against_compose(bench)
        print_log_cost(bench)
        print_shadow_cost(bench)
        print_summary(rows)
    except SideFailed as exc:
        failed = exc.side
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        clean_up(scratch, sides, failed, options.keep)
        print(f"\ntook {(time.monotonic() - started) / 60:.1f} minutes")


def use_source(scratch: Scratch, ref: str | None) -> str:
    """Where the stacks' code comes from, said as a sentence."""
    commit = git("rev-parse", "--short", f"{ref or 'HEAD'}^{{commit}}")
    if ref is None:
        changed = " with changes not committed" if git("status", "--porcelain") else ""
        return f"the working tree at {commit}{changed}"
    scratch.source = scratch.subdirectory("source")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch.source, filter="data")
    return f"{ref} ({commit}), exported to {scratch.source}"


def git(*arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"git {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout.strip()


def print_commands(sides: list[Side]) -> None:
    print("\nsides:")
    for side in sides:
        for launch in side.launches:
            print(f"  {side.label:<24}{shlex.join(launch.argv)}")
            if side.v2:  # MLServer: what its repository says (parallel_workers 1 where not set: its default)
                for path in sorted(launch.cwd.glob("**/*settings.json")):
                    settings = json.dumps(json.loads(path.read_text()))
                    print(f"  {'':<26}{path.relative_to(launch.cwd)}: {settings}")
                if "OMP_NUM_THREADS" in launch.env:
                    print(f"  {'':<26}OMP_NUM_THREADS={launch.env['OMP_NUM_THREADS']}")


def clean_up(scratch: Scratch, sides: list[Side], failed: Side | None, keep: bool) -> None:
    if failed is not None:
        for launch in failed.launches:
            print(f"\n--- last lines of {launch.log} ---")
            if launch.log.exists():
                print("\n".join(launch.log.read_text(errors="replace").splitlines()[-40:]))
    harness.stop_processes([(process, side.whole_group) for side in sides for process in side.processes()])
    print_predictions_logged(scratch)
    for name in scratch.databases:
        harness.scratch_database(PG_ADMIN, name, drop=True)
    flush_redis()
    if keep:
        print(f"scratch directory kept: {scratch.directory}")
    else:
        shutil.rmtree(scratch.directory, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"\nbench/peers.py failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted")
