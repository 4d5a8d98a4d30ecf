"""The metrics reference: every family `/metrics` can show, from the objects that make them.

Two kinds: the metric objects the processes update (prometheus_client's Counter, Gauge,
Histogram in the modules below), and the families the web's collectors read at scrape
time (queue depths, spools, beat's upkeep). The collectors read the broker and the
database when scraped; the site is built without either, so here they read stand-ins that
make them yield every family they can.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from unittest import mock

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from docsgen.markdown import code, joined, table

# The modules that define metric objects (the drift test finds any other by its source).
METRIC_MODULES = ("tasks.observability.metrics", "web.answered")
# A counter `x` is exposed as `x_total`; a histogram as `x_bucket`, `x_sum`, `x_count`.
_SUFFIX = {"counter": "_total"}


@dataclass(frozen=True)
class Family:
    name: str  # as exposed: a counter's with `_total`
    type: str
    labels: tuple[str, ...]
    help: str
    source: str  # the module that makes it


def families() -> list[Family]:
    return [*metric_objects(), *scrape_time_families()]


def metric_objects() -> list[Family]:
    found: dict[str, Family] = {}
    for module_name in METRIC_MODULES:
        module = importlib.import_module(module_name)
        for metric in _metrics_of(module):
            for described in metric.describe():
                name = described.name + _SUFFIX.get(described.type, "")
                # prometheus_client keeps a metric's label names only in this attribute.
                labels = tuple(metric._labelnames)
                found[name] = Family(name, described.type, labels, described.documentation, _path(module))
    return list(found.values())


def scrape_time_families() -> list[Family]:
    from web import backlog, upkeep_metrics

    with _backlog_collector() as collector:
        found = _families_of(collector, backlog)
    with _upkeep_collector() as collector:
        found += _families_of(collector, upkeep_metrics)
    return found


def metrics_table() -> str:
    rows = [
        (code(family.name), family.type, joined(family.labels), family.help, code(family.source))
        for family in families()
    ]
    return table(("metric", "type", "labels", "help", "made by"), rows)


def _metrics_of(module: ModuleType) -> Iterator[MetricWrapperBase]:
    return (value for value in vars(module).values() if isinstance(value, MetricWrapperBase))


def _families_of(collector: Collector, module: ModuleType) -> list[Family]:
    return [
        Family(
            family.name,
            family.type,
            tuple(dict.fromkeys(label for sample in family.samples for label in sample.labels)),
            family.documentation,
            _path(module),
        )
        for family in collector.collect()
    ]


def _path(module: ModuleType) -> str:
    return module.__name__.replace(".", "/") + ".py"


@contextmanager
def _backlog_collector() -> Iterator[Collector]:
    from tasks.contract import PREDICT_QUEUE, SPOOLS
    from tasks.web_clients import BrokerQueues
    from web.backlog import BacklogCollector

    # A broker that answers, with one queue's depth: every family it can yield.
    with (
        tempfile.TemporaryDirectory() as spool_dir,
        mock.patch.object(BrokerQueues, "depths", return_value={PREDICT_QUEUE: 0}),
    ):
        for name in SPOOLS:
            (Path(spool_dir) / name).mkdir()
        yield BacklogCollector("redis://127.0.0.1:6379/0", Path(spool_dir))


# What `db.maintenance.status` reports, with every part present: a watermark, a logged
# prediction and a hypertable, so that every gauge of `web.upkeep_metrics` is made.
_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_UPKEEP_REPORT = {
    "statistics": {"ok": True, "built": True, "pending": 0, "lag_s": 0.0, "watermark": _NOW.isoformat()},
    "columnstore": {"ok": True, "tables": {"trade_history": {"chunks": 1, "compressed": 0, "due": 0}}},
    "retention": {"ok": True, "oldest_prediction": _NOW.isoformat()},
}


@contextmanager
def _upkeep_collector() -> Iterator[Collector]:
    from config import Settings
    from web import upkeep_metrics

    session = mock.MagicMock()
    session.__enter__.return_value.scalar.return_value = _NOW
    with (
        mock.patch.object(upkeep_metrics, "Session", return_value=session),
        mock.patch.object(upkeep_metrics.maintenance, "status", return_value=_UPKEEP_REPORT),
    ):
        yield upkeep_metrics.UpkeepCollector(Settings.model_construct())
