"""GET /metrics: Prometheus text of every process, and the latency of every request.

In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set for each process, METRICS_DIR the
directory that holds their directories) a scrape adds up the files of every web
worker, Celery pool process and container found there; the queue depths and the
spools' size are read at scrape time (`web.backlog`), and so is where beat's upkeep stands
(`web.upkeep_metrics`). Without it, the metrics are this
process's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tasks.observability.metrics import ensure_multiprocess_directory
from web.answered import ANSWERED
from web.backlog import BacklogCollector
from web.openapi.declare import Answer, documented
from web.settings import current_settings
from web.upkeep_metrics import UpkeepCollector

ensure_multiprocess_directory()
blueprint = Blueprint("metrics", __name__)


def measure_requests(app: Flask) -> None:
    """The collectors a scrape reads at scrape time. Each request's latency is observed
    with its access line, after the answer (`web.answered`)."""
    settings = current_settings(app)
    app.extensions["metrics_backlog"] = BacklogCollector(
        settings.celery_broker_url, settings.spool_dir, result_url=settings.celery_result_backend
    )
    app.extensions["metrics_upkeep"] = UpkeepCollector(settings)


@blueprint.get("/metrics")
@documented(
    operation_id="metrics",
    summary="Prometheus metrics",
    tag="operations",
    answers={200: Answer("Prometheus text format", media={"text/plain": {"type": "string"}})},
    description="Includes the workers' metrics (prometheus_client multiprocess mode).",
)
def metrics() -> Response:
    ANSWERED.write()  # this process's requests answered so far are counted in this scrape
    registry = CollectorRegistry(auto_describe=False)
    directories = metric_directories()
    registry.register(ProcessFiles(directories) if directories else ThisProcess())
    registry.register(current_app.extensions["metrics_backlog"])
    registry.register(current_app.extensions["metrics_upkeep"])
    # The format the scraper asks for (Prometheus text or OpenMetrics), as the library's own exporter does.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


def metric_directories() -> list[Path]:
    """METRICS_DIR and its subdirectories, and this process's own PROMETHEUS_MULTIPROC_DIR."""
    directories: list[Path] = []
    root = current_settings().metrics_dir
    if root is not None and root.is_dir():
        directories += [root, *(path for path in sorted(root.iterdir()) if path.is_dir())]
    own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own and Path(own).is_dir():
        directories.append(Path(own))
    unique: dict[Path, Path] = {}
    for directory in directories:
        unique.setdefault(directory.resolve(), directory)
    return list(unique.values())


class ProcessFiles(Collector):
    """The metric files of every process, summed (prometheus_client's multiprocess merge)."""

    def __init__(self, directories: list[Path]):
        self._directories = directories

    def collect(self) -> Iterator:
        files = [str(path) for directory in self._directories for path in sorted(directory.glob("*.db"))]
        return iter(MultiProcessCollector.merge(files, accumulate=True))


class ThisProcess(Collector):
    """The default registry: this process's metrics (development server, tests in process)."""

    def collect(self) -> Iterator:
        return REGISTRY.collect()
