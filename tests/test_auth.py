"""API_TOKEN: every /api/v1 and /v2/models route needs the bearer token; health, metrics, docs stay open."""

from __future__ import annotations

import re

from tests.support.http import call
from web.auth import protects

TOKEN = "test-token-5f0c2b"
WRONG = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"},
]


def calls(app, under_api: bool, leave_out: str | None = None) -> list[tuple[str, str]]:
    """(method, path) of every route in the app's url_map, with a placeholder for each variable."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or protects(rule.rule, app.extensions["api_open_paths"]) != under_api:
            continue
        if leave_out is not None and rule.endpoint.startswith(f"{leave_out}."):
            continue
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        found += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_every_api_route_needs_the_bearer_token(clean, app, start_web):
    web = start_web(API_TOKEN=TOKEN)
    routes = calls(app, under_api=True)
    assert len(routes) >= 9  # trades (5) and ml (4) at least
    for method, path in [*routes, ("GET", "/api/v1/no-such-route"), ("GET", "/api/v1")]:
        for headers in WRONG:
            answer = call(web.url + path, method, headers=headers)
            assert answer.status == 401, (method, path, headers)
            error = answer.json()["error"]
            if path.startswith("/v2/"):  # the Open Inference Protocol's shape: {"error": "<message>"}
                assert error == "missing or wrong bearer token", (method, path)
            else:
                assert error["code"] == "unauthorized"
        allowed = call(web.url + path, method, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status not in (401, 500), (method, path, allowed.body)


def test_routes_outside_the_api_need_no_token(clean, app, start_web):
    web = start_web(API_TOKEN=TOKEN)
    # The dashboard's pages have a login of their own (tests/test_dashboard.py).
    routes = calls(app, under_api=False, leave_out="dashboard")
    assert {("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/api/v1/openapi.json")} <= set(routes)
    for method, path in routes:
        answer = call(web.url + path, method)
        assert answer.status not in (401, 500), (method, path, answer.body)
