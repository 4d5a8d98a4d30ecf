"""What the project's source does, read from its syntax trees: the environment variables it
reads, the metrics it makes, the error codes it raises, its command-line entry points.

The drift test (tests/test_docs_reference.py) compares these with the reference pages.
They are read from the source, not from the generators, so a variable, metric, code or
command the generators do not know of is caught too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not the project's code: the test suite and the benchmarks read variables of their own
# (listed on the configuration page all the same), and the rest is not Python we wrote.
SKIPPED = {".venv", ".venv-peers", "tests", "bench", "site", "data", "model_store", "node_modules"}

METRIC_CLASSES = {
    "Counter",
    "Gauge",
    "Histogram",
    "Summary",
    "Info",
    "Enum",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "HistogramMetricFamily",
    "GaugeHistogramMetricFamily",
    "SummaryMetricFamily",
    "InfoMetricFamily",
    "StateSetMetricFamily",
    "UnknownMetricFamily",
}
_ENVIRONMENT_METHODS = {"get", "setdefault", "pop"}


@dataclass(frozen=True)
class Found:
    """Something found in the source; `name` is None when it is not a literal the scan can read."""

    name: str | None
    path: str  # relative to the repository's root
    line: int
    status: int | None = None  # an error code's HTTP status, where the source gives it


def source_files() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED or part.startswith(".") for part in relative.parts[:-1]):
            continue
        yield relative.as_posix(), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- environment variables --------------------------------------------------------------


def environment_reads() -> list[Found]:
    """Every `os.environ[...]`, `os.environ.get/setdefault/pop(...)`, `os.getenv(...)`,
    `... in os.environ` and click `envvar=`, with the variable's name where it can be told."""
    found = []
    for path, tree in source_files():
        constants = _module_constants(tree)
        loops = _loop_variables(tree, constants)
        environ, getenv = _os_names(tree)
        for node in ast.walk(tree):
            for key in _environment_keys(node, environ, getenv):
                for name in _names(key, constants, loops):
                    found.append(Found(name, path, node.lineno))
    return found


def _os_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """How the module spells `os.environ` and `os.getenv` (`from os import environ` too)."""
    environ, getenv = {"os.environ"}, {"os.getenv"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                spelled = alias.asname or alias.name
                {"environ": environ, "getenv": getenv}.get(alias.name, set()).add(spelled)
    return environ, getenv


def _environment_keys(node: ast.AST, environ: set[str], getenv: set[str]) -> Iterator[ast.expr]:
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _dotted(node.value) in environ:
        yield node.slice
    elif isinstance(node, ast.Call):
        func = node.func
        method = isinstance(func, ast.Attribute) and func.attr in _ENVIRONMENT_METHODS
        if node.args and ((method and _dotted(func.value) in environ) or _dotted(func) in getenv):
            yield node.args[0]
        yield from (keyword.value for keyword in node.keywords if keyword.arg == "envvar")
    elif (
        isinstance(node, ast.Compare)
        and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
        and any(_dotted(side) in environ for side in node.comparators)
    ):
        yield node.left


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _module_constants(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level names bound to a string, or to a tuple or list of strings."""
    constants = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        strings = _strings(node.value) if targets else None
        for target in targets:
            if isinstance(target, ast.Name) and strings is not None:
                constants[target.id] = strings
    return constants


def _strings(node: ast.AST | None) -> tuple[str, ...] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.Tuple | ast.List) and all(
        isinstance(item, ast.Constant) and isinstance(item.value, str) for item in node.elts
    ):
        return tuple(item.value for item in node.elts)
    return None


def _loop_variables(tree: ast.Module, constants: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """`for variable in NAMES:` over a module constant: the values the variable takes."""
    loops: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            values = _strings(node.iter)
            if values is None and isinstance(node.iter, ast.Name):
                values = constants.get(node.iter.id)
            if values is not None:
                loops[node.target.id] = values
    return loops


def _names(
    key: ast.expr, constants: dict[str, tuple[str, ...]], loops: dict[str, tuple[str, ...]]
) -> tuple[str | None, ...]:
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return (key.value,)
    if isinstance(key, ast.Name):
        values = loops.get(key.id) or constants.get(key.id)
        if values is not None:
            return values
    return (None,)


# -- metrics ----------------------------------------------------------------------------


def metric_constructions() -> list[Found]:
    """Every metric the source constructs (prometheus_client's classes and metric families).
    A construction whose name is a parameter of its function is followed to that
    function's calls in the same module."""
    found = []
    for path, tree in source_files():
        for function, call in _constructions(tree):
            name = _first_argument(call, "name")
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.append(Found(name.value, path, call.lineno))
                continue
            passed = _parameter_index(function, name)
            calls = (
                list(_calls_of(tree, function.name)) if function is not None and passed is not None else []
            )
            for outer in calls:
                argument = outer.args[passed] if passed < len(outer.args) else None
                literal = isinstance(argument, ast.Constant) and isinstance(argument.value, str)
                found.append(Found(argument.value if literal else None, path, outer.lineno))
            if not calls:
                found.append(Found(None, path, call.lineno))
    return found


def _constructions(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | None, ast.Call]]:
    def visit(
        node: ast.AST, function: ast.FunctionDef | None
    ) -> Iterator[tuple[ast.FunctionDef | None, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef) else function
            if isinstance(child, ast.Call) and _is_metric(child):
                yield function, child
            yield from visit(child, inner)

    return visit(tree, None)


def _is_metric(call: ast.Call) -> bool:
    """A metric class called with a name and a documentation (`collections.Counter` never is)."""
    if _dotted(call.func).rpartition(".")[2] not in METRIC_CLASSES:
        return False
    given = len(call.args) + sum(keyword.arg in ("name", "documentation") for keyword in call.keywords)
    return given >= 2


def _first_argument(call: ast.Call, keyword: str) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((item.value for item in call.keywords if item.arg == keyword), None)


def _parameter_index(function: ast.FunctionDef | None, name: ast.expr | None) -> int | None:
    if function is None or not isinstance(name, ast.Name):
        return None
    parameters = [argument.arg for argument in function.args.args]
    return parameters.index(name.id) if name.id in parameters else None


def _calls_of(tree: ast.Module, function_name: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func) == function_name:
            yield node


# -- error codes ------------------------------------------------------------------------


def error_codes_raised() -> list[Found]:
    """Every error code the source gives a JSON error: `ApiError(status, code, ...)`,
    `error_response(status, code, ...)`, `invalid(error, status)` (always `invalid_input`),
    a class declared with `code=` (a `ModelError`), and a dict with a literal `code` and a
    `message`."""
    found = []
    for path, tree in source_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                found += _raised_by_call(node, path)
            elif isinstance(node, ast.ClassDef):
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                if "code" in keywords:
                    found.append(_found(keywords["code"], keywords.get("status"), path, node.lineno))
            elif isinstance(node, ast.Dict):
                keys = {
                    key.value: value
                    for key, value in zip(node.keys, node.values, strict=True)
                    if isinstance(key, ast.Constant)
                }
                code = keys.get("code")
                if "message" in keys and isinstance(code, ast.Constant):
                    found.append(_found(code, None, path, node.lineno))
    return found


def _raised_by_call(call: ast.Call, path: str) -> list[Found]:
    function = _dotted(call.func).rpartition(".")[2]
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    if function in ("ApiError", "error_response"):
        status = call.args[0] if call.args else keywords.get("status")
        code = call.args[1] if len(call.args) > 1 else keywords.get("code")
        return [_found(code, status, path, call.lineno)]
    if function == "invalid":
        status = call.args[1] if len(call.args) > 1 else keywords.get("status", ast.Constant(422))
        return [_found(ast.Constant("invalid_input"), status, path, call.lineno)]
    return []


def _found(code: ast.expr | None, status: ast.expr | None, path: str, line: int) -> Found:
    name = code.value if isinstance(code, ast.Constant) and isinstance(code.value, str) else None
    number = status.value if isinstance(status, ast.Constant) and isinstance(status.value, int) else None
    return Found(name, path, line, number)


# -- command-line entry points ----------------------------------------------------------


def main_modules() -> list[str]:
    """Modules run as `python -m <module>`: those with an `if __name__ == "__main__":`."""
    modules = []
    for path, tree in source_files():
        if any(_is_main_guard(node) for node in tree.body):
            module = path.removesuffix(".py").replace("/", ".")
            modules.append(module.removesuffix(".__main__"))
    return modules


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return any(_dotted(side) == "__name__" for side in sides) and any(
        isinstance(side, ast.Constant) and side.value == "__main__" for side in sides
    )


def click_commands() -> list[Found]:
    """Module-level functions made click commands or groups (`@click.command()`,
    `@group.command(...)`, `AppGroup` assignments are found at run time instead)."""
    found = []
    for path, tree in source_files():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(_is_command(item) for item in node.decorator_list):
                found.append(Found(node.name, path, node.lineno))
    return found


def _is_command(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return _dotted(target).rpartition(".")[2] in ("command", "group")
