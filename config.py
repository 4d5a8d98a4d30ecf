"""The project's settings, read from the environment (and `.env` in development).

Web processes, workers, beat, migrations and the CLI all read the same object, so a
variable means the same thing everywhere. Every variable is listed in README.md.
"""

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/tradebot"
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_result_backend: str = "redis://127.0.0.1:6379/1"
    model_dir: Path = Path("./model_store")
    # Every version that served a model is kept in MODEL_ARCHIVE_DIR (content-addressed, by
    # version hash; `MODEL_DIR/.versions` when unset, which a listing never shows), so a
    # replaced file's versions stay servable: the newest MODEL_VERSIONS_KEPT per name, plus
    # every version a release names. A predict worker holds its release's champion and
    # challenger loaded, and at most MODEL_VERSIONS_LOADED other versions on demand.
    model_archive_dir: Path | None = None
    model_versions_kept: int = Field(default=10, ge=1)
    model_versions_loaded: int = Field(default=4, ge=0)
    spool_dir: Path = Path("./data/trades")
    api_token: SecretStr | None = None
    predict_timeout_s: float = Field(default=10.0, gt=0)
    timescaledb: Literal["auto", "require", "off"] = "auto"
    allow_pickle_models: bool = False
    flower_basic_auth: SecretStr | None = None
    # The dashboard (`/`): its session cookie's signing key (derived from API_TOKEN when
    # unset; the web server's alone) and where its Flower link points (from FLOWER_ADDRESS
    # and FLOWER_PORT when unset).
    web_secret_key: SecretStr | None = None
    flower_url: str | None = None

    # Trade journal tuning; the defaults suit production.
    journal_batch_size: int = Field(default=200, ge=1, le=1000)
    journal_batch_wait_s: float = Field(default=0.05, gt=0)
    journal_db_retries: int = Field(default=5, ge=0)
    journal_db_backoff_s: float = Field(default=0.5, ge=0)
    journal_max_redeliveries: int = Field(default=5, ge=1)
    spool_replay_interval_s: float = Field(default=5.0, gt=0)
    # A message held by a worker that vanished outright (SIGKILL, a lost host) goes back
    # to its queue this long after its worker last renewed it (a live worker renews what
    # it holds every quarter of it, however long an outage lasts).
    broker_visibility_timeout_s: int = Field(default=300, ge=1)

    # Model serving tuning: how many queued predictions a worker stacks into one model
    # call at most, and how long the first of them may wait for company.
    predict_max_batch: int = Field(default=64, ge=1, le=10_000)
    predict_batch_wait_s: float = Field(default=0.001, gt=0)
    # A prediction no worker has started this long after it was sent is dropped (its job
    # fails with prediction_expired): its caller has long stopped waiting, and its market
    # data is stale.
    predict_expires_s: float = Field(default=60.0, gt=0)
    # The prediction log (`prediction_log`): every prediction, written off the answer's
    # path in batches; its input rows kept (at most PREDICTION_LOG_MAX_ROWS a prediction)
    # unless PREDICTION_LOG_FEATURES=off; entries older than PREDICTION_LOG_RETENTION_DAYS
    # removed by beat (0 keeps them for ever).
    prediction_log: bool = True
    prediction_log_features: bool = True
    prediction_log_max_rows: int = Field(default=1000, ge=0)
    prediction_log_retention_days: int = Field(default=90, ge=0)
    prediction_log_flush_s: float = Field(default=0.2, gt=0)
    max_request_bytes: int = Field(default=4_194_304, ge=1024)
    # The longest a database statement may run (or wait for a lock); the client gives up
    # a few seconds later on a server that stopped answering (db/timeouts.py). The web
    # only reads: its statements get WEB_STATEMENT_TIMEOUT_S, so a slow read is a 504
    # within it and never holds a connection for long.
    database_statement_timeout_s: float = Field(default=30.0, gt=0)
    web_statement_timeout_s: float = Field(default=10.0, gt=0)
    # The kept statistics (statistics, performance, the dashboard) answer exactly as the
    # journal stood at most this long ago: beat folds the logged changes every half of
    # it, and a read folds what is older first (0: every read folds what waits).
    stats_max_staleness_s: float = Field(default=5.0, ge=0)
    # TimescaleDB: beat converts chunks to the columnstore once they are this old (0:
    # never). Trades keep getting closed for weeks (a late close updates a compressed
    # chunk, which TimescaleDB handles, at a cost); logged predictions never change.
    trades_compress_after_days: int = Field(default=30, ge=0)
    prediction_log_compress_after_days: int = Field(default=2, ge=0)

    # Serving processes: the web server (granian, `python -m web.server`) and Flower
    # (flowerconfig.py). WEB_THREADS: Python threads per web worker process; a
    # synchronous prediction holds one while it waits, so 2 x 16 let 32 wait at once.
    web_bind: str = "127.0.0.1:5173"
    web_workers: int = Field(default=2, ge=1)
    web_threads: int = Field(default=16, ge=1)
    # On SIGTERM, how long in-flight requests may take to finish; above PREDICT_TIMEOUT_S.
    web_graceful_timeout_s: int = Field(default=30, ge=1)
    flower_address: str = "127.0.0.1"
    flower_port: int = Field(default=5555, ge=0, le=65535)

    # Observability: log lines as readable text or JSON; where /metrics finds the metric
    # files of every process (each writes to PROMETHEUS_MULTIPROC_DIR, a subdirectory);
    # where the web's access lines go: its stderr (unset or "-"), or a file it appends to
    # (`make run`: data/logs/access.log, so that they do not queue behind honcho's pipe).
    log_format: Literal["text", "json"] = "text"
    metrics_dir: Path | None = None
    access_log: Path | None = None

    @field_validator(
        "api_token",
        "flower_basic_auth",
        "metrics_dir",
        "web_secret_key",
        "flower_url",
        "access_log",
        "model_archive_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

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
