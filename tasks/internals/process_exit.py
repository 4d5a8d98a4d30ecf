"""Code run when this process ends, however it ends normally.

A plain interpreter runs `atexit` at exit. A multiprocessing child does not: once its
target returns it ends with `os._exit`, after running multiprocessing's own finalizers
(`multiprocessing.util.Finalize`, which the standard library does not document). granian's
web workers are such children.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import sys
from collections.abc import Callable

from tasks.internals import UnsupportedRelease

SERIES = (3, 11)
if sys.version_info[:2] != SERIES:
    raise UnsupportedRelease(
        f"{__name__} uses multiprocessing.util.Finalize of Python {SERIES[0]}.{SERIES[1]}, but this is "
        f"Python {sys.version_info[0]}.{sys.version_info[1]}: review {__name__}, then update its check"
    )


def at_exit(callback: Callable[[], object]) -> None:
    """Run `callback` once when this process ends (a second run finds nothing to do)."""
    atexit.register(callback)
    multiprocessing.util.Finalize(None, callback, exitpriority=10)
