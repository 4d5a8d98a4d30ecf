"""`make test`'s two processes share the suite by module, and every RabbitMQ module runs in
one of them (tests/support/xdist_scopes.py), checked against the installed pytest-xdist:
a tiny suite of the same shape runs under the suite's own conftest with -n 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.support.processes import ROOT
from tests.support.xdist_scopes import RABBITMQ_SCOPE, ModuleScheduling, scope_of


def test_the_rabbitmq_modules_share_one_scope_and_every_other_module_has_its_own():
    assert scope_of("tests/test_rabbitmq_journal.py::test_a") == RABBITMQ_SCOPE
    assert scope_of("tests/test_compose_rabbitmq.py::test_b[x::y]") == RABBITMQ_SCOPE
    assert scope_of("tests/test_outages.py::test_c") == "tests/test_outages.py"
    assert scope_of("tests/test_spool.py::Case::test_d") == "tests/test_spool.py"
    # The method xdist calls is the one overridden (xdist_scopes.py pins the release).
    assert "_split_scope" in vars(LoadScopeScheduling)
    assert ModuleScheduling._split_scope is not LoadScopeScheduling._split_scope


TINY_CONFTEST = """
import json, os
import pytest

@pytest.fixture(autouse=True)
def record(request):
    with open(os.environ["SCOPES_LOG"], "a") as log:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
        log.write(json.dumps({"worker": worker, "test": request.node.nodeid}) + "\\n")
"""

TINY_MODULES = [
    *["test_rabbitmq_ops.py", "test_compose_rabbitmq.py"],  # one scope
    *["test_alpha.py", "test_beta.py", "test_gamma.py"],  # one each
]


def run_tiny_suite(tmp_path: Path, *options: str) -> list[dict[str, str]]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(TINY_CONFTEST)
    for module in TINY_MODULES:
        (suite / module).write_text("".join(f"def test_{n}():\n    pass\n\n\n" for n in range(4)))
    log = tmp_path / "scopes.jsonl"
    # The suite's own conftest as a plugin: its scheduler hook, its Redis databases check.
    done = run_pytest(
        suite, "-p", "tests.conftest", "-q", *options, SCOPES_LOG=str(log), PYTHONPATH=str(ROOT)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_pytest(cwd: Path, *options: str, **env: str) -> subprocess.CompletedProcess:
    """A pytest run of its own in `cwd`, apart from this run's xdist processes (this
    process may be one of them: their variables are left out)."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options],
        cwd=cwd,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_under_two_processes_each_module_and_all_of_rabbitmq_run_in_one_process(tmp_path):
    ran = run_tiny_suite(tmp_path, "-n", "2")
    assert len(ran) == 4 * len(TINY_MODULES)
    workers_of: dict[str, set[str]] = defaultdict(set)
    for test in ran:
        workers_of[test["test"].split("::")[0]].add(test["worker"])
        workers_of[scope_of(test["test"])].add(test["worker"])
    assert all(len(workers) == 1 for workers in workers_of.values()), dict(workers_of)
    assert {test["worker"] for test in ran} == {"gw0", "gw1"}  # both processes had work


@pytest.mark.parametrize("options", [["-n", "0"], ["-p", "no:xdist"], []], ids=["-n 0", "no xdist", "no -n"])
def test_without_xdist_processes_the_suite_runs_as_one(tmp_path, options):
    ran = run_tiny_suite(tmp_path, *options)
    assert len(ran) == 4 * len(TINY_MODULES)
    assert {test["worker"] for test in ran} == {"none"}


def test_more_processes_than_pairs_of_redis_databases_is_refused(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_one.py").write_text("def test_one():\n    pass\n")
    done = run_pytest(
        suite, "-p", "tests.conftest", "-n", "3", PYTHONPATH=str(ROOT), TEST_REDIS_DBS="14,15,4,5"
    )
    assert done.returncode == 4  # a usage error, before any worker starts
    assert "TEST_REDIS_DBS='14,15,4,5': 3 test process(es) need as many pairs" in done.stderr


def test_each_schemathesis_operation_test_has_a_node_id_of_its_own():
    """xdist runs tests by node id: one id shared by the 43 operations ran one of them."""
    done = run_pytest(ROOT, "--collect-only", "-q", "tests/test_openapi.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = [
        line for line in done.stdout.splitlines() if "::test_every_operation_answers_as_documented" in line
    ]
    assert len(ids) > 1 and len(set(ids)) == len(ids)
    assert "tests/test_openapi.py::test_every_operation_answers_as_documented[GET /healthz]" in ids
