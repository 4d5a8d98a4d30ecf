"""The reference pages (docs/reference) against the code: nothing the code reads, makes,
raises or runs is missing from them, and the site builds.

The pages' generated parts come from `docsgen`; what the code does is read here from its
syntax trees (`docsgen.scan`), from prometheus_client's registry, from a live scrape and
from the app itself, so a variable, metric, code or command the generators do not know
of fails a test instead of going undocumented.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import click
import pytest
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.exceptions import BadRequest

from config import Settings
from docsgen import GENERATORS, PLACEHOLDER, expand, scan
from docsgen.metrics import families
from docsgen.settings import variables
from models import ModelError
from web import create_app
from web.error_codes import ERROR_CODES

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
# The error handlers that pass on the code of the error they handle (ApiError's, ModelError's, werkzeug's).
FORWARDING_ERRORS = {"web/errors.py"}
CLICK_BLOCK = re.compile(r"^::: mkdocs-click\n((?:[ \t]+:\w+:.*(?:\n|$))+)", re.MULTILINE)
CLICK_OPTION = re.compile(r"^[ \t]+:(\w+):[ \t]*(.*?)[ \t]*$", re.MULTILINE)


@cache
def page(name: str) -> str:
    """A reference page as the site shows it: its generated parts put in."""
    return expand((REFERENCE / f"{name}.md").read_text(encoding="utf-8"))


def listed(markdown: str) -> set[str]:
    """The names in the first column of every table of `markdown` (inline code)."""
    names = set()
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find("\n## ", start + len(heading) + 2)
    return markdown[start : end if end != -1 else None]


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def where(found: list[scan.Found]) -> list[str]:
    return sorted(f"{item.name} ({item.path}:{item.line})" for item in found)


# -- configuration ----------------------------------------------------------------------


def test_every_environment_variable_the_code_reads_is_on_the_configuration_page():
    reads = scan.environment_reads()
    unreadable = [f"{item.path}:{item.line}" for item in reads if item.name is None]
    assert unreadable == [], "environment reads whose variable the scan cannot tell; use a literal name"
    documented = listed(page("configuration"))
    assert where([item for item in reads if item.name not in documented]) == []


def test_every_setting_is_on_the_configuration_page():
    assert set(variables()) - listed(page("configuration")) == set()


def test_every_variable_the_compose_files_and_the_procfile_use_is_on_the_configuration_page():
    used = {
        name: path.name
        for path in [*ROOT.glob("docker-compose*.yml"), ROOT / "Procfile"]
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text(encoding="utf-8"))
    }
    documented = listed(page("configuration"))
    assert {name: path for name, path in used.items() if name not in documented} == {}


# -- metrics ----------------------------------------------------------------------------


def on_metrics_page(name: str, documented: set[str]) -> bool:
    # A counter's family is named without the `_total` its samples (and the page) carry;
    # outside multiprocess mode each counter and histogram also shows an `x_created` gauge.
    stem = name.removesuffix("_created")
    return any(candidate in documented for candidate in (name, f"{name}_total", stem, f"{stem}_total"))


def default_families() -> set[str]:
    """What prometheus_client itself registers (process, platform, garbage collector)."""
    collectors = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
    return {family.name for collector in collectors for family in collector.collect()}


def test_every_metric_the_source_constructs_is_on_the_metrics_page():
    constructed = scan.metric_constructions()
    unreadable = [f"{item.path}:{item.line}" for item in constructed if item.name is None]
    assert unreadable == [], "metrics whose name the scan cannot tell; use a literal name"
    documented = listed(page("metrics"))
    assert where([item for item in constructed if not on_metrics_page(item.name, documented)]) == []


def test_every_registered_metric_is_on_the_metrics_page():
    for path in {item.path for item in scan.metric_constructions()}:
        importlib.import_module(module_of(path))
    registered = {family.name for family in REGISTRY.collect()} - default_families()
    documented = listed(page("metrics"))
    assert sorted(name for name in registered if not on_metrics_page(name, documented)) == []


def test_every_family_a_scrape_answers_is_on_the_metrics_page(app, broker):
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200
    scraped = {family.name for family in text_string_to_metric_families(answer.get_data(as_text=True))}
    # The database and the broker answer here, so the collectors' families are in it too.
    assert {"celery_queue_length", "journal_upkeep_ok", "columnstore_chunks"} <= scraped
    documented = listed(page("metrics"))
    assert (
        sorted(name for name in scraped - default_families() if not on_metrics_page(name, documented)) == []
    )


def test_the_metrics_notes_name_only_metrics_that_exist():
    notes = listed(section(page("metrics"), "## What the labels hold")) - {"metric"}
    assert notes - {family.name for family in families()} == set()


# -- error codes ------------------------------------------------------------------------


def test_every_error_code_the_source_raises_is_in_the_catalogue_with_its_status():
    raised = scan.error_codes_raised()
    unreadable = [f"{item.path}:{item.line}" for item in raised if item.name is None]
    assert [spot for spot in unreadable if spot.partition(":")[0] not in FORWARDING_ERRORS] == []
    unknown = [item for item in raised if item.name is not None and item.name not in ERROR_CODES]
    assert where(unknown) == [], "codes missing from web/error_codes.py"
    wrong = [
        f"{item.name} {item.status} ({item.path}:{item.line})"
        for item in raised
        if item.name in ERROR_CODES
        and item.status is not None
        and item.status not in ERROR_CODES[item.name].statuses
    ]
    assert wrong == [], "statuses web/error_codes.py does not give"


def werkzeug_errors() -> dict[str, int]:
    """The code and status of each error werkzeug raises before a view answers."""
    app = create_app(Settings(max_request_bytes=1024))

    def refuse():
        raise BadRequest()

    app.add_url_rule("/probe/bad-request", "bad_request_probe", refuse)
    client = app.test_client()
    answers = [
        client.get("/no/such/route"),
        client.delete("/healthz"),
        client.post("/api/v1/trades", data=b"[" + b"0," * 1024 + b"0]", content_type="application/json"),
        client.get("/probe/bad-request"),
    ]
    return {answer.get_json()["error"]["code"]: answer.status_code for answer in answers}


def test_the_errors_werkzeug_raises_are_in_the_catalogue():
    errors = werkzeug_errors()
    assert set(errors.values()) == {404, 405, 413, 400}
    for code, status in errors.items():
        assert code in ERROR_CODES and status in ERROR_CODES[code].statuses, code


def test_the_catalogue_lists_only_codes_something_answers():
    answered = {item.name for item in scan.error_codes_raised()} | set(werkzeug_errors()) | {ModelError.code}
    assert set(ERROR_CODES) - answered == set()
    assert ModelError.status in ERROR_CODES[ModelError.code].statuses


def test_every_code_of_the_catalogue_is_on_the_errors_page():
    assert set(ERROR_CODES) - listed(page("errors")) == set()


# -- CLI --------------------------------------------------------------------------------


def click_blocks() -> list[dict[str, str]]:
    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    return [dict(CLICK_OPTION.findall(block)) for block in CLICK_BLOCK.findall(text)]


def command_tree(command: click.Command) -> list[click.Command]:
    """A command and every command under it, as mkdocs-click renders them (hidden ones not)."""
    if command.hidden:
        return []
    found = [command]
    for sub in getattr(command, "commands", {}).values():
        found += command_tree(sub)
    return found


def documented_commands() -> dict[int, click.Command]:
    documented = {}
    for block in click_blocks():
        command = getattr(importlib.import_module(block["module"]), block["command"])
        documented.update({id(item): item for item in command_tree(command)})
    return documented


def test_every_command_of_the_app_is_on_the_cli_page():
    documented = documented_commands()
    commands = create_app().cli.commands
    missing = [
        item.name
        for command in commands.values()
        for item in command_tree(command)
        if id(item) not in documented
    ]
    assert missing == []
    prog_names = {block["prog_name"] for block in click_blocks()}
    assert {f"flask --app web {name}" for name in commands} <= prog_names


def test_every_click_command_in_the_source_is_on_the_cli_page():
    documented = documented_commands()
    commands = [
        (item, getattr(importlib.import_module(module_of(item.path)), item.name))
        for item in scan.click_commands()
    ]
    assert (
        where([item for item, command in commands if command_tree(command) and id(command) not in documented])
        == []
    )


def test_every_module_run_with_python_m_is_on_the_cli_page():
    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    assert [module for module in scan.main_modules() if f"python -m {module}" not in text] == []


# -- the pages and the site -------------------------------------------------------------


def test_every_placeholder_has_a_generator_and_every_generator_a_page():
    used = {
        match["name"] for path in REFERENCE.glob("*.md") for match in PLACEHOLDER.finditer(path.read_text())
    }
    assert used == set(GENERATORS)


@pytest.mark.timeout(600)
def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-5000:]
