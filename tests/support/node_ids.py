"""One node id per test: pytest-xdist hands tests to its processes by node id, so tests
sharing one would all but one silently not run under `make test`.

schemathesis 4.32.5 names each operation's test `test_x[GET /path]` but builds it with no
parametrization, and pytest 9.2 makes a Function's id from its function name and
parametrization only: every operation of `tests/test_openapi.py` got the one id
`tests/test_openapi.py::test_every_operation_answers_as_documented` (and under -n 2, one of
its 43 operations ran). Such an item gets the id its name says; any id still shared after
that stops the run, whatever library version made it.
"""

from __future__ import annotations

from collections import Counter

import pytest
from _pytest.nodeid import NodeId

# `_pytest.nodeid` and `Node._id` are private: on an upgrade, check that a Function's id
# still lives in `_id` (Node.nodeid reads it) as a NodeId, then run
# tests/test_xdist_scopes.py and raise this pin.
PYTEST_VERSION = "9.2.0"
assert pytest.__version__ == PYTEST_VERSION, (
    f"tests/support/node_ids.py was written for pytest {PYTEST_VERSION}, this is "
    f"{pytest.__version__}: re-check where a node keeps its id"
)


def make_node_ids_unique(items: list[pytest.Item]) -> None:
    shared = {nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1}
    for item in items:
        if item.nodeid in shared and item.parent is not None:
            named = NodeId.parse(f"{item.parent.nodeid}::{item.name}")
            if str(named) != item.nodeid:
                item._id = named  # pytest 9 keeps a node's id there (Node.nodeid reads it)
    still = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if still:
        raise pytest.UsageError(f"tests share a node id (xdist would run one of each): {still}")
