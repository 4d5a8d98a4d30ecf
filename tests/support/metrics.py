"""Read Prometheus text the way a scraper does."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import call
from web.metrics import ProcessFiles


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    answer = call(base_url + "/metrics")
    assert answer.status == 200, answer.body[:500]
    return parse(answer.body.decode())


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a counter nobody has touched yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def read_files(directory: Path) -> dict[tuple[str, frozenset], float]:
    """What /metrics would report of the processes writing to `directory`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessFiles([directory]))
    return parse(generate_latest(registry).decode())
