"""/api/v1/ml while Redis does not answer: 503 JSON errors, never a 500."""

from __future__ import annotations

import socket
import uuid

import pytest

from tests.support.apps import web_app


@pytest.fixture
def app_without_redis():
    """An app whose broker and result store name a port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return web_app(
        celery_broker_url=f"redis://127.0.0.1:{port}/0", celery_result_backend=f"redis://127.0.0.1:{port}/1"
    )


def test_model_routes_answer_503_while_redis_is_down(app_without_redis):
    client = app_without_redis.test_client()
    for response in (
        client.get("/api/v1/ml/models"),
        client.get(f"/api/v1/ml/jobs/{uuid.uuid4()}"),
    ):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "broker_unavailable"
