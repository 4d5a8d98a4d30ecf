"""Fixtures: a fresh PostgreSQL database built by the migrations, the real Redis, real workers.

Every process of a test run (this one, and the workers, beat and CLI commands the tests
start) reads the same environment, set in `pytest_configure` before anything reads the
project's settings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from tests.support import rabbitmq
from tests.support.filesystems import mount_tiny, unmount
from tests.support.node_ids import make_node_ids_unique
from tests.support.processes import Beat, WebServer, Worker, flask, wait_for

# Fixtures kept in modules of their own (`browser`: the dashboard's browser tests).
pytest_plugins = ["tests.support.browser"]

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
RUN_ID = uuid.uuid4().hex[:8]
RUN_DIR = Path(tempfile.mkdtemp(prefix=f"tradebot-test-{RUN_ID}-"))
DATABASE_URL = make_url(PG_ADMIN_URL).set(database=f"tradebot_test_{RUN_ID}").render_as_string(False)
# Two Redis databases per process, broker and results: TEST_REDIS_DBS lists pairs, and
# pytest-xdist's process gwN takes the pair N (a run without xdist, the first). 12 is
# `make bench-ingest`'s, 6 to 11 the other benchmarks', 0 and 1 `make run`'s.
TEST_REDIS_DBS = os.environ.get("TEST_REDIS_DBS", "14,15,4,5")
_dbs = TEST_REDIS_DBS.split(",")
REDIS_DB_PAIRS = [_dbs[i : i + 2] for i in range(0, len(_dbs), 2)]
PROCESS_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
# Too few pairs, or a pair short of a database, is refused in pytest_configure.
_pair = REDIS_DB_PAIRS[PROCESS_INDEX] if len(REDIS_DB_PAIRS) > PROCESS_INDEX else []
BROKER_DB, RESULT_DB = [*_pair, "", ""][:2]
BROKER_URL = f"{REDIS_URL}/{BROKER_DB}"
RESULT_URL = f"{REDIS_URL}/{RESULT_DB}"


def pytest_configure(config: pytest.Config) -> None:
    processes = config.getoption("numprocesses", None) or 1  # xdist's -n; 0 or absent: this process
    if any(len(pair) != 2 for pair in REDIS_DB_PAIRS) or processes > len(REDIS_DB_PAIRS):
        raise pytest.UsageError(
            f"TEST_REDIS_DBS={TEST_REDIS_DBS!r}: {processes} test process(es) need as many pairs"
            " of Redis databases (broker,results), e.g. 14,15,4,5 for two"
        )
    os.environ.update(
        {
            "DATABASE_URL": DATABASE_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            "CELERY_RESULT_BACKEND": RESULT_URL,
            "SPOOL_DIR": str(RUN_DIR / "spool"),
            "MODEL_DIR": str(RUN_DIR / "models"),
            "API_TOKEN": "",
            "TIMESCALEDB": "auto",
            # Short retries and replay interval so outages resolve within a test.
            "JOURNAL_DB_RETRIES": "2",
            "JOURNAL_DB_BACKOFF_S": "0.1",
            "JOURNAL_BATCH_WAIT_S": "0.02",
            "SPOOL_REPLAY_INTERVAL_S": "1",
            # Every statistics read folds what the journal logged first: exact at once.
            "STATS_MAX_STALENESS_S": "0",
            "PYTHONUNBUFFERED": "1",
            # The checkout first on every process's path, as the image's PYTHONPATH=/app: a
            # test's working directory holds a `models/` folder (MODEL_DIR), which would
            # otherwise shadow the `models` package as a namespace package.
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "LOG_FORMAT": "text",
        }
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    make_node_ids_unique(items)  # tests/support/node_ids.py: schemathesis' tests shared one


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Whole modules per process, and the RabbitMQ modules all in one (tests/support/xdist_scopes.py)."""
    from tests.support.xdist_scopes import ModuleScheduling

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = make_url(DATABASE_URL).database
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the most common failure: PostgreSQL is not running
        pytest.exit(f"cannot create the test database at {PG_ADMIN_URL}: {exc}", returncode=3)
    try:
        flask(["db", "upgrade"], dict(os.environ), RUN_DIR)
        yield DATABASE_URL
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def broker() -> redis.Redis:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.exit(f"Redis does not answer at {REDIS_URL}: {exc}", returncode=3)
    return client


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """CELERY_BROKER_URL for the machine's RabbitMQ, in a fresh vhost of this test's own."""
    try:
        # A RabbitMQ that a test before restarted may take a moment to listen again.
        wait_for(rabbitmq.answers, 30, "RabbitMQ to answer", interval=0.2)
    except AssertionError:
        pytest.exit(f"RabbitMQ does not answer at {rabbitmq.HOST}:{rabbitmq.PORT}", returncode=3)
    with rabbitmq.fresh_vhost() as vhost:
        yield rabbitmq.broker_url(vhost)


@pytest.fixture
def clean(engine: Engine, broker: redis.Redis) -> None:
    """An empty journal, empty queues and an empty spool."""
    with engine.begin() as connection:
        connection.execute(
            # trade_history's TRUNCATE trigger empties the kept statistics with it.
            text(
                "TRUNCATE trade_history, trade_pending_updates, prediction_log, prediction_counts,"
                " model_release_state, model_releases, shadow_experiments, shadow_pair_sums, shadow_links"
            )
        )
    broker.flushdb()
    redis.Redis.from_url(RESULT_URL).flushdb()
    shutil.rmtree(RUN_DIR / "spool", ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of processes a test starts; the test's spool is its own."""
    return {**os.environ, "SPOOL_DIR": str(tmp_path / "spool")}


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path, database_url: str) -> Iterator:
    started: list[Worker] = []

    def start(concurrency: int = 2, **overrides: str) -> Worker:
        worker = Worker({**env, **overrides}, tmp_path, concurrency=concurrency)
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def web(env: dict[str, str], tmp_path: Path, database_url: str, clean: None) -> Iterator:
    """Start the web server (`python -m web.server`) as configured by default (plain logs), clean state."""
    started: list[WebServer] = []

    def start(workers: int = 1, **overrides: str) -> WebServer:
        server = WebServer({**env, **overrides}, tmp_path, workers=workers)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path, database_url: str) -> Iterator:
    """Start one-process workers on the given queues (`start("predict", pool="threads")`)."""
    started: list[Worker] = []

    def start(queues: str, pool: str = "prefork", **overrides: str) -> Worker:
        worker = Worker({**env, **overrides}, tmp_path, queues=queues, concurrency=1, pool=pool)
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_beat(env: dict[str, str], tmp_path: Path, database_url: str) -> Iterator:
    started: list[Beat] = []

    def start(**overrides: str) -> Beat:
        beat = Beat({**env, **overrides}, tmp_path)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


@pytest.fixture
def refusing_symbol(engine: Engine) -> Iterator[str]:
    """A CHECK constraint the database enforces and the door does not know: an entry
    that got past validation but can never be stored (until `accept_every_symbol`)."""
    with engine.begin() as connection:
        connection.execute(
            text("ALTER TABLE trade_history ADD CONSTRAINT test_refused CHECK (symbol <> 'REFUSED/X')")
        )
    yield "REFUSED/X"
    accept_every_symbol(engine)


def accept_every_symbol(engine: Engine) -> None:
    """Drop `refusing_symbol`'s constraint: what it refused can be stored now."""
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE trade_history DROP CONSTRAINT IF EXISTS test_refused"))


@pytest.fixture
def tiny_filesystem() -> Iterator[Path]:
    """A 64 KiB tmpfs the test mounts (as root): a disk that fills up for real."""
    folder = mount_tiny()
    yield folder
    unmount(folder)


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """METRICS_DIR of a test: each process it starts writes to a subdirectory of it."""
    return tmp_path / "metrics"


@pytest.fixture
def start_web(env: dict[str, str], tmp_path: Path, metrics_dir: Path, database_url: str) -> Iterator:
    """Start the web server (2 workers), with JSON logs and multiprocess metrics."""
    started: list[WebServer] = []

    def start(workers: int = 2, threads: int = 4, **overrides: str) -> WebServer:
        web_env = {
            **env,
            "WEB_THREADS": str(threads),
            "METRICS_DIR": str(metrics_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "web"),
            "LOG_FORMAT": "json",
            **overrides,
        }
        web = WebServer(web_env, tmp_path, workers=workers)
        started.append(web)
        return web.wait_ready()

    yield start
    for web in started:
        web.stop()


@pytest.fixture(scope="session")
def app(database_url: str):
    from web import create_app

    return create_app()


@pytest.fixture
def http(app, clean):
    return app.test_client()


@pytest.fixture(scope="session")
def zoo():
    """MODEL_DIR filled by XGBoost, LightGBM and PyTorch themselves; name -> in-process predictions."""
    import warnings

    from config import get_settings
    from tests.support.model_zoo import build_zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        return build_zoo(get_settings().model_dir)
