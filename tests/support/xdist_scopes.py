"""How `make test`'s pytest-xdist processes share the suite: whole modules, and every
RabbitMQ module in one process, one after another.

Each module runs whole in one process, so a module-scoped fixture (a stack, a worker) starts
once. The RabbitMQ modules (every test module with "rabbitmq" in its path) share one scope:
some stop the machine's RabbitMQ (`rabbitmqctl stop_app`), close its connections or lower its
memory watermark, which would break a RabbitMQ test running at the same time in the other
process.

xdist has no public way to name the scope of a test: `--dist loadgroup`'s `xdist_group`
marks are not applied under pytest 9 (xdist 3.8.0 sets `item._nodeid`, pytest 9 keeps the
id in `_id`). `LoadScopeScheduling` calls `_split_scope(nodeid)` for every test, to build
its work units and to record what it handed out; overriding that one private method is the
whole of this module, and tests/test_xdist_scopes.py checks it against the installed xdist.
"""

from __future__ import annotations

import xdist
from xdist.scheduler import LoadScopeScheduling

# `_split_scope` is private: on an upgrade, check that LoadScopeScheduling still builds its
# work units (`schedule`) and its bookkeeping (`mark_test_complete`) from
# `self._split_scope(nodeid)`, then run tests/test_xdist_scopes.py and raise this pin.
XDIST_VERSION = "3.8.0"
assert xdist.__version__ == XDIST_VERSION, (
    f"tests/support/xdist_scopes.py was written for pytest-xdist {XDIST_VERSION}, this is "
    f"{xdist.__version__}: re-check how LoadScopeScheduling uses _split_scope"
)

RABBITMQ_SCOPE = "rabbitmq"


def scope_of(nodeid: str) -> str:
    """The work unit of a test: its module's path, or "rabbitmq" for every RabbitMQ module."""
    module = nodeid.split("::", 1)[0]
    return RABBITMQ_SCOPE if "rabbitmq" in module else module


class ModuleScheduling(LoadScopeScheduling):
    """xdist's `--dist loadscope`, by module, with the RabbitMQ modules as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)
