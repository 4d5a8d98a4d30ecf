"""The only modules that touch private internals of the libraries below them.

Each one uses what a library does not offer publicly, and asserts at import the release
series it was written for (`written_for`): an upgrade fails at start-up with an error
naming the module to revisit, not later with wrong behaviour. tests/test_internals.py
runs each against the installed library.

- `kombu_redis`: kombu's Redis transport (kombu 5.7)
- `celery_batches`: handing a batch to the worker's pool (celery-batches 0.11), and telling
  whether the prefork pool dropped it (billiard 4.3)
- `celery_results`: Celery's result metadata, written directly (celery 5.6)
- `process_exit`: code run at the end of a multiprocessing child too (Python 3.11)
"""

from __future__ import annotations

from importlib.metadata import version


class UnsupportedRelease(ImportError):
    """An installed library is not the release a fenced module was written for."""


def written_for(distribution: str, series: str, module: str) -> None:
    """Raise unless `distribution`'s installed version is in `series` (e.g. "5.7")."""
    installed = version(distribution)
    if installed != series and not installed.startswith(series + "."):
        raise UnsupportedRelease(
            f"{module} uses private internals of {distribution} {series}, but {installed} is "
            f"installed: review {module} against {distribution} {installed}, then update its check"
        )
