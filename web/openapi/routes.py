"""The app's operations: every rule and method of its url_map, with what its view declares.

The document is built from this walk alone, so a route added without a declaration
(`@documented` or `@undocumented`) is an error naming it, not a silent gap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Flask
from werkzeug.routing import Rule

from web.openapi.declare import Declaration, Documented, declarations

IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask answers them on every rule


class UndocumentedRoutes(LookupError):
    def __init__(self, missing: list[tuple[str, str]]):
        self.missing = missing
        named = ", ".join(f"{method} {rule}" for rule, method in missing)
        super().__init__(f"routes without OpenAPI documentation (@documented or @undocumented): {named}")


@dataclass(frozen=True)
class Route:
    rule: str  # the Flask rule, e.g. "/api/v1/trades/<trade_id>"
    method: str
    declared: Declaration


def routes(app: Flask) -> list[Route]:
    """Every rule and method with its declaration; raises when any has none."""
    missing = undocumented_routes(app)
    if missing:
        raise UndocumentedRoutes(missing)
    found = []
    for rule, method in _served(app):
        declared = _declared(app, rule, method)
        if isinstance(declared, Documented) and set(declared.path) != rule.arguments:
            raise ValueError(
                f"{method} {rule.rule} documents path parameters {sorted(declared.path)}, "
                f"the rule has {sorted(rule.arguments)}"
            )
        found.append(Route(rule.rule, method, declared))
    ids = Counter(route.declared.operation_id for route in found if isinstance(route.declared, Documented))
    if reused := sorted(name for name, count in ids.items() if count > 1):
        raise ValueError(f"operation ids used more than once: {', '.join(reused)}")
    return found


def undocumented_routes(app: Flask) -> list[tuple[str, str]]:
    """(rule, method) of every route whose view declares nothing for it."""
    return [(rule.rule, method) for rule, method in _served(app) if _declared(app, rule, method) is None]


def _served(app: Flask) -> Iterator[tuple[Rule, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - IMPLICIT_METHODS):
            yield rule, method


def _declared(app: Flask, rule: Rule, method: str) -> Declaration | None:
    found = [
        declared
        for declared in declarations(app, rule.endpoint)
        if declared.rule in (None, rule.rule) and declared.method in (None, method)
    ]
    if len(found) > 1:
        raise ValueError(f"{method} {rule.rule}: {len(found)} declarations apply; give each a rule or method")
    return found[0] if found else None
