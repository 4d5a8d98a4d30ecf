"""The project's settings, read from the environment (and `.env` in development).

Web processes, workers, beat, migrations and the CLI all read the same object, so a
variable means the same thing everywhere. Each field's description is its entry in the
configuration reference, docs/reference/configuration.md, generated from this class.
"""

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Each field is the variable of its name in upper case; its description is what the
    configuration reference (docs/reference/configuration.md) says of it."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/tradebot",
        description="The trade database (an SQLAlchemy URL).",
    )
    celery_broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Celery broker: Redis (`redis://`) or RabbitMQ (`amqp://`).",
    )
    celery_result_backend: str = Field(
        default="redis://127.0.0.1:6379/1",
        description="Task results (Redis); with RabbitMQ as the broker it holds the prediction lane too.",
    )
    model_dir: Path = Field(
        default=Path("./model_store"),
        description="The model files served (the `models/` folder is code).",
    )
    model_archive_dir: Path | None = Field(
        default=None,
        description="Where every version that served a model is kept, content-addressed by version "
        "hash, so that a replaced file's versions stay servable; written by the predict workers. "
        "Unset: `MODEL_DIR/.versions`, which a listing never shows.",
    )
    model_versions_kept: int = Field(
        default=10,
        ge=1,
        description="Versions kept per model name (the newest), besides every version a release names.",
    )
    model_versions_loaded: int = Field(
        default=4,
        ge=0,
        description="Versions a predict worker holds loaded, on demand, for `model_version` requests, "
        "besides its releases' champion and challenger (which it always holds).",
    )
    spool_dir: Path = Field(
        default=Path("./data/trades"),
        description="The spool's folders: `outbox` (trade messages the broker did not take yet), "
        "`replay` (entries the database did not take yet) and `dead-letter` (entries that can "
        "never be stored as they are).",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="When set, `/api/v1` and `/v2/models` need `Authorization: Bearer <token>`.",
    )
    predict_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a synchronous prediction waits before its 504."
    )
    timescaledb: Literal["auto", "require", "off"] = Field(
        default="auto",
        description="`auto`: hypertables when the server has TimescaleDB; `require`: fail without it; `off`.",
    )
    allow_pickle_models: bool = Field(default=False, description="Pickled models are refused unless set.")
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description="`user:password` for Flower's pages and REST API; required to listen beyond loopback.",
    )
    web_secret_key: SecretStr | None = Field(
        default=None,
        description="Signs the dashboard's session cookie (the web server's alone); unset: derived from "
        "API_TOKEN. Set it in production.",
    )
    flower_url: str | None = Field(
        default=None,
        description="Flower's address as the operators' browsers reach it; the dashboard links to it. "
        "Unset: `http://FLOWER_ADDRESS:FLOWER_PORT`.",
    )

    # Trade journal tuning; the defaults suit production.
    journal_batch_size: int = Field(
        default=200, ge=1, le=1000, description="Most trade messages a worker writes in one transaction."
    )
    journal_batch_wait_s: float = Field(
        default=0.05, gt=0, description="Longest a message waits for its batch to fill."
    )
    journal_db_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a batch while the database is unavailable, before it is spooled.",
    )
    journal_db_backoff_s: float = Field(
        default=0.5, ge=0, description="The first backoff between those retries; it doubles, up to 30 s."
    )
    journal_max_redeliveries: int = Field(
        default=5,
        ge=1,
        description="Deliveries of a message without an outcome (its worker died each time) before the "
        "next one is dead-lettered as poison; outages never count.",
    )
    spool_replay_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often beat runs `trades.replay_spool` (and, on RabbitMQ, "
        "`trades.drain_dead_letter_queue`).",
    )
    broker_visibility_timeout_s: int = Field(
        default=300,
        ge=1,
        description="Redis brokers only (RabbitMQ gives a dead worker's messages back at once): a message "
        "held by a worker that was killed outright (SIGKILL, a lost host) returns to its queue this "
        "long after its worker last renewed it. A live worker renews what it holds every quarter of "
        "it, so an outage never makes a message visible again; workers sweep for returned messages "
        "every tenth of it (at most every 10 s).",
    )

    # Model serving tuning.
    predict_max_batch: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Most queued predictions a worker stacks into one model call; a model's sidecar "
        "`max_batch` sets its own.",
    )
    predict_batch_wait_s: float = Field(
        default=0.001,
        gt=0,
        description="Longest the first of them waits for company (on the direct lane: only when callers "
        "are queueing); a sidecar's `batch_wait_s` sets a model's own.",
    )
    predict_direct_bind: str | None = Field(
        default="127.0.0.1",
        description="Where each predict process listens for the web's synchronous predictions, on a free "
        "port it registers in Redis: the web sends them straight to it, one hop instead of two through "
        "Redis, and over Redis's lane when it cannot. `off`: Redis's lane only. Compose sets `0.0.0.0`.",
    )
    predict_direct_host: str | None = Field(
        default=None,
        description="The host the web connects to for that port; unset: PREDICT_DIRECT_BIND, or this "
        "host's address when it binds every interface (in a container, its address on its network).",
    )
    # Dropped rather than served late: its caller has long stopped waiting.
    predict_expires_s: float = Field(
        default=60.0,
        gt=0,
        description="A prediction no worker has started this long after it was sent is dropped; its job "
        "fails with `prediction_expired` (a backlog after an outage is not worked through on stale "
        "market data).",
    )
    # The prediction log (`prediction_log`): every prediction, written off the answer's
    # path in batches.
    prediction_log: bool = Field(default=True, description="`off`: predictions are not logged.")
    prediction_log_features: bool = Field(default=True, description="`off`: the log keeps no input rows.")
    prediction_log_max_rows: int = Field(
        default=1000, ge=0, description="Most input rows the log keeps per prediction (0: none)."
    )
    prediction_log_retention_days: int = Field(
        default=90,
        ge=0,
        description="Logged predictions older than this are removed hourly by beat; 0 keeps them for ever.",
    )
    prediction_log_flush_s: float = Field(
        default=0.2,
        gt=0,
        description="How often a predict worker process writes its log entries (one batch each).",
    )
    max_request_bytes: int = Field(
        default=4_194_304, ge=1024, description="The largest request body (413 beyond)."
    )
    database_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="The longest a database statement may run or wait for a lock (PostgreSQL's "
        "`statement_timeout`); a server that does not answer at all is given up on 5 s after it "
        "(`db/timeouts.py`). Migrations, `stats refresh` and `storage compress` have no limit.",
    )
    # The web only reads, so its statements get a limit of their own.
    web_statement_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="The same for the web's statements: a read that runs longer answers 504 "
        "`database_timeout` within it and never holds a connection for long.",
    )
    stats_max_staleness_s: float = Field(
        default=5.0,
        ge=0,
        description="The statistics, the per-version performance and the dashboard answer exactly as the "
        "journal stood at most this long ago: beat folds the journal's logged changes every half of "
        "it, and a read first folds what is older. `0`: every read folds what waits.",
    )
    # Trades keep getting closed for weeks; logged predictions never change.
    trades_compress_after_days: int = Field(
        default=30,
        ge=0,
        description="TimescaleDB: beat converts chunks of `trade_history` and `trade_closes` older than "
        "this to the columnstore (0: never); a late close of an older trade still works, at a cost.",
    )
    prediction_log_compress_after_days: int = Field(
        default=2, ge=0, description="The same for `prediction_log` (0: never)."
    )

    # Serving processes: the web server (granian, `python -m web.server`) and Flower
    # (flowerconfig.py).
    web_bind: str = Field(
        default="127.0.0.1:5173",
        description="`host:port` the web server binds (`[::1]:5173` for IPv6; an empty host is every "
        "interface; compose: `0.0.0.0:5173` in its container). It refuses to start when something "
        "listens there already.",
    )
    web_workers: int = Field(default=2, ge=1, description="Web worker processes (granian's workers).")
    web_threads: int = Field(
        default=16,
        ge=1,
        description="Python threads per web worker process (granian's blocking threads); a synchronous "
        "prediction holds one while it waits, so 2 x 16 let 32 clients wait at once.",
    )
    web_graceful_timeout_s: int = Field(
        default=30,
        ge=1,
        description="After SIGTERM, how long requests in flight may take to finish (all workers "
        "together; then their workers are killed). Keep it above PREDICT_TIMEOUT_S.",
    )
    flower_address: str = Field(
        default="127.0.0.1",
        description="The interface Flower listens on (compose: `0.0.0.0` in its container).",
    )
    flower_port: int = Field(default=5555, ge=0, le=65535, description="Flower's port.")

    # Observability.
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: readable lines; `json`: one JSON object a line, with the request id.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="The directory `/metrics` adds up: every process's metric files, in one "
        "subdirectory per container or host (each process writes to its PROMETHEUS_MULTIPROC_DIR).",
    )
    predict_timeline_dir: Path | None = Field(
        default=None,
        description="A diagnostic, off when unset: the web and the predict workers write each synchronous "
        "prediction's stage stamps here (`bench/timeline.py` sets it and reads them).",
    )
    # A file, because a line per request through honcho's pipe throttles the web.
    access_log: Path | None = Field(
        default=None,
        description="A file the web appends its access lines to; unset or `-`: its stderr. `make run` "
        "sets `data/logs/access.log`.",
    )

    @field_validator(
        "api_token",
        "flower_basic_auth",
        "metrics_dir",
        "web_secret_key",
        "flower_url",
        "access_log",
        "model_archive_dir",
        "predict_timeline_dir",
        "predict_direct_host",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("predict_direct_bind", mode="before")
    @classmethod
    def _off_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off") else value

    @field_validator("access_log", mode="before")
    @classmethod
    def _dash_is_stderr(cls, value: object) -> object:
        return None if value == "-" else value

    @property
    def model_archive(self) -> Path:
        """Where kept model versions live: MODEL_ARCHIVE_DIR, else `MODEL_DIR/.versions`."""
        return self.model_archive_dir or self.model_dir / ".versions"

    def service_urls(self) -> dict[str, str]:
        """Where a browser on this machine reaches the web server and Flower."""
        host, _, port = self.web_bind.rpartition(":")
        return {
            "web": f"http://{_visit(host)}:{port}",
            "flower": f"http://{_visit(self.flower_address)}:{self.flower_port}",
        }


def _visit(host: str) -> str:
    """Where a browser on this machine reaches a server bound to `host`."""
    try:
        every_interface = not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a host name
        every_interface = False
    return "127.0.0.1" if every_interface else host


@lru_cache
def get_settings() -> Settings:
    return Settings()
