"""The OpenAPI document, its docs page, and schemathesis over every route of the real app.

The app runs against the real PostgreSQL and Redis, with a real predict worker and a
real trades worker (`celery -A tasks worker -Q ...`), so predictions answer and trades
reach the journal while schemathesis sends generated requests.
"""

from __future__ import annotations

import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import TypeAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from config import Settings
from db import TradeRecord
from tests.support.model_zoo import ROWS, SEQUENCES
from tests.support.processes import Worker, wait_for
from web import create_app
from web.openapi.declare import Answer, Undocumented, documented, undocumented
from web.openapi.document import REF, build_document, openapi_path
from web.openapi.routes import UndocumentedRoutes, routes, undocumented_routes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DOCUMENT = "/api/v1/openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,  # a method a path does not serve: 405 with Allow
]
# Routes of the shared contract whose handlers other branches add (web/health.py, web/metrics.py).
CONTRACT_ONLY = {("/healthz", "GET"), ("/readyz", "GET"), ("/metrics", "GET")}


def served_operations(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every rule the app routes."""
    return {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


@pytest.fixture(scope="module")
def workers(zoo, tmp_path_factory, database_url):
    folder = tmp_path_factory.mktemp("openapi-workers")
    started = [
        Worker(dict(os.environ), folder, queues="predict", concurrency=1),
        Worker(dict(os.environ), folder, queues="trades", concurrency=1),
    ]
    try:
        ready = [worker.wait_ready() for worker in started]
        # /readyz answers 200 (no 5xx, as checked) only once every model is loaded.
        ready[0].wait_models_loaded(os.environ["CELERY_RESULT_BACKEND"], set(zoo))
        yield ready
    finally:
        for worker in started:
            worker.stop()


def test_every_route_of_the_app_is_in_the_document(app):
    document = app.test_client().get(DOCUMENT).get_json()
    served, documented = served_operations(app), documented_operations(document)
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served <= CONTRACT_ONLY, "documented operations that no handler serves"


def test_every_rule_and_method_is_documented_unless_left_out_with_a_reason(app):
    document = app.test_client().get(DOCUMENT).get_json()
    left_out = [route for route in routes(app) if isinstance(route.declared, Undocumented)]
    assert all(route.declared.reason for route in left_out)
    expected = {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if (rule.rule, method) not in {(route.rule, route.method) for route in left_out}
    }
    assert documented_operations(document) == expected
    assert undocumented_routes(app) == []


def test_a_route_added_without_documentation_is_caught():
    app = create_app()

    def throwaway():
        return ""

    app.add_url_rule("/api/v1/throwaway", "throwaway", throwaway)
    assert undocumented_routes(app) == [("/api/v1/throwaway", "GET")]
    with pytest.raises(UndocumentedRoutes, match="GET /api/v1/throwaway"):
        build_document(app, "0")

    # Declared either way, it passes: documented it is in the document, left out it is not.
    documented(operation_id="throwaway", summary="-", tag="docs", answers={200: Answer("-")})(throwaway)
    app.add_url_rule("/probe", "probe", undocumented("a probe for tests")(lambda: ""))
    assert undocumented_routes(app) == []
    paths = build_document(app, "0")["paths"]
    assert paths["/api/v1/throwaway"]["get"]["operationId"] == "throwaway" and "/probe" not in paths


def test_the_document_is_the_validating_types_schema(app):
    document = app.test_client().get(DOCUMENT).get_json()
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    assert schemas["TradeRecord"] == {
        key: value
        for key, value in TypeAdapter(TradeRecord).json_schema(ref_template=REF).items()
        if key != "$defs"
    }
    post = document["paths"]["/api/v1/trades"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TradeRecord"
    }
    listing = document["paths"]["/api/v1/trades"]["get"]
    limit = next(parameter for parameter in listing["parameters"] if parameter["name"] == "limit")
    assert limit["in"] == "query" and limit["schema"]["maximum"] == 1000

    predict = document["paths"]["/api/v1/ml/predict"]["post"]
    assert {"name": "Prefer", "in": "header"}.items() <= predict["parameters"][0].items()
    assert set(predict["responses"]["202"]["headers"]) == {"Location", "Preference-Applied"}
    assert {"200", "202", "400", "401", "404", "413", "422", "503", "504"} <= set(predict["responses"])
    error = document["components"]["responses"]["UnprocessableEntity"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the value of API_TOKEN, when it is set",
    }
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_the_docs_page_loads_everything_from_the_app(app):
    client = app.test_client()
    page = client.get("/api/v1/docs", follow_redirects=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert DOCUMENT in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page loads something from elsewhere"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and response.content_length, asset


@pytest.fixture
def api_token() -> str:
    return "docs-token"


def test_with_a_token_set_the_documentation_stays_open(database_url, api_token):
    client = create_app(Settings(api_token=api_token)).test_client()
    assert client.get(DOCUMENT).status_code == 200
    assert client.get("/api/v1/docs/").status_code == 200
    assert client.get("/api/v1/trades").status_code == 401


# Loaded at collection (schemathesis parametrizes from it) from an app of its own; it
# answers with the session's database and Redis once the fixtures have set them up.
# Operations of the contract that this app does not route yet are only checked for presence.
SCHEMA_APP = create_app()
api_schema = schemathesis.openapi.from_wsgi(DOCUMENT, SCHEMA_APP).include(
    lambda ctx: (ctx.operation.path, ctx.operation.method.upper()) in served_operations(SCHEMA_APP)
)


@api_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_operation_answers_as_documented(case, workers):
    case.call_and_validate(checks=CHECKS)


def test_real_predictions_and_trades_answer_as_documented(workers, zoo):
    def call(path: str, method: str, **parts):
        return api_schema[path][method].Case(**parts).call_and_validate(checks=CHECKS)

    answer = call(
        "/api/v1/ml/predict", "POST", body={"model_name": "xgb.json", "features": ROWS[[0, 2, 3]].tolist()}
    )
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3
    sequences = {"model_name": "forecaster.pt", "features": SEQUENCES.tolist()}
    queued = call("/api/v1/ml/predict", "POST", body=sequences, headers={"Prefer": "respond-async"})
    assert queued.status_code == 202
    job_id = queued.json()["job_id"]

    def job_done():
        job = call("/api/v1/ml/jobs/{job_id}", "GET", path_parameters={"job_id": job_id}).json()
        return job if job["status"] == "succeeded" else None

    assert wait_for(job_done, 30, "the async prediction")["result"]["model_name"] == "forecaster.pt"
    assert any(model["loaded"] for model in call("/api/v1/ml/models", "GET").json()["models"])

    trade = {
        "symbol": "ETH/USDT",
        "side": "sell",
        "amount": 1.5,
        "entry_price": 3000.0,
        "signals": {"rsi": 70},
    }
    trade_id = call("/api/v1/trades", "POST", body=trade).json()["trade_id"]
    call("/api/v1/trades/{trade_id}", "PATCH", path_parameters={"trade_id": trade_id}, body={"closed": True})

    def closed_trade():
        response = call("/api/v1/trades/{trade_id}", "GET", path_parameters={"trade_id": trade_id})
        return response.status_code == 200 and response.json()["closed"]

    wait_for(closed_trade, 30, "the trades worker to store the closed trade")
    assert call("/api/v1/trades", "GET", query={"symbol": "ETH/USDT"}).json()["count"] >= 1
    stats = call("/api/v1/trades/stats", "GET", query={"bucket": "1 day"}).json()
    assert stats["trades"] >= 1 and stats["buckets"]
