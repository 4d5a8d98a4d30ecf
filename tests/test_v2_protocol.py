"""The Open Inference Protocol (V2) end to end: the web server, a real worker, Triton's own client.

The module's MODEL_DIR holds models of four features, the width of the MLServer and
Seldon examples, written by the libraries' save functions; every answer over V2 is
compared with the library's in-process prediction of the same file.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import lightgbm
import numpy as np
import pytest
import torch
import tritonclient.http as triton
import xgboost
from tritonclient.utils import InferenceServerException
from werkzeug.datastructures import Headers

from models.lstm import LSTMForecaster, save_checkpoint
from tests.conftest import RESULT_URL
from tests.support.http import Answer
from tests.support.metrics import scrape, value
from tests.support.model_zoo import labels_of, random_rows, version_of
from tests.support.processes import WebServer, Worker, wait_for

TOLERANCE = 1e-5
WIDTH = 4
ROWS = random_rows(6, WIDTH, seed=11, decimals=6)
SEQUENCES = random_rows(2 * 7, WIDTH, seed=12, decimals=6).reshape(2, 7, WIDTH).astype(np.float32)
TREES = ("xgb4.json", "gbm4.txt")


def write_models(folder: Path) -> None:
    train = random_rows(300, WIDTH, seed=10)
    labels = labels_of(train)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(train, labels), 10
    )
    booster.save_model(folder / "xgb4.json")
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}
    lightgbm.train(params, lightgbm.Dataset(train, labels), 10).save_model(folder / "gbm4.txt")
    torch.manual_seed(0)
    save_checkpoint(LSTMForecaster(input_size=WIDTH, hidden_size=8, num_layers=1).eval(), folder / "lstm4.pt")


def library_predictions(folder: Path, name: str, features: np.ndarray) -> np.ndarray:
    if name.endswith(".json"):
        return xgboost.Booster(model_file=str(folder / name)).predict(xgboost.DMatrix(features))
    if name.endswith(".txt"):
        return lightgbm.Booster(model_file=str(folder / name)).predict(features)
    from models.lstm import load_checkpoint

    with torch.inference_mode():
        return load_checkpoint(folder / name)(torch.from_numpy(features)).numpy().reshape(len(features))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, database_url):
    folder = tmp_path_factory.mktemp("v2")
    models = folder / "models"
    models.mkdir()
    write_models(models)
    env = {
        **os.environ,
        "MODEL_DIR": str(models),
        "SPOOL_DIR": str(folder / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        "METRICS_DIR": str(folder / "metrics"),
        "LOG_FORMAT": "json",
    }
    # Both queues: the server is ready (as /readyz) only when each has a consumer.
    worker = Worker(env, folder, queues="predict,trades").wait_ready()
    worker.wait_models_loaded(RESULT_URL, {"xgb4.json", "gbm4.txt", "lstm4.pt"})
    web = WebServer(env, folder, workers=2).wait_ready()
    yield web, models
    web.stop()
    worker.stop()


@pytest.fixture(scope="module")
def client(stack):
    web, _ = stack
    server = triton.InferenceServerClient(url=urlsplit(web.url).netloc)
    yield server
    server.close()


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Answer:
    """One request as sent: the path not normalized, the body not encoded."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, Headers(response.getheaders()), response.read())
    finally:
        connection.close()


def post(url: str, path: str, body: object, **headers: str) -> Answer:
    return raw(url, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})


def tensor(array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


# -- health and metadata --------------------------------------------------------------


def test_server_and_models_are_live_and_ready_for_tritonclient(client, stack):
    _, models = stack
    assert client.is_server_live()
    wait_for(client.is_server_ready, 30, "the V2 server to be ready (every /readyz check)")
    for name in (*TREES, "lstm4.pt"):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=version_of(models / name))
    assert not client.is_model_ready("no-such-model.json")
    assert not client.is_model_ready("xgb4.json", model_version="0000000000000000")


@pytest.mark.parametrize(
    ("name", "platform", "input_shape", "datatype"),
    [
        ("xgb4.json", "xgboost", [-1, WIDTH], "FP64"),
        ("gbm4.txt", "lightgbm", [-1, WIDTH], "FP64"),
        # The checkpoint does not fix a sequence length: the time dimension is -1.
        ("lstm4.pt", "pytorch", [-1, -1, WIDTH], "FP32"),
    ],
)
def test_model_metadata_gives_versions_platform_and_tensor_shapes(
    client, stack, name, platform, input_shape, datatype
):
    _, models = stack
    version = version_of(models / name)
    metadata = client.get_model_metadata(name)
    assert metadata["name"] == name and metadata["platform"] == platform
    assert metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": datatype, "shape": input_shape}]
    assert metadata["outputs"] == [{"name": "predict", "datatype": datatype, "shape": [-1]}]
    assert client.get_model_metadata(name, model_version=version) == metadata
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata(name, model_version="ffffffffffffffff")
    assert (
        unknown.value.status() == "404"
        and "has no kept version 'ffffffffffffffff'" in unknown.value.message()
    )


def test_health_is_open_and_the_model_routes_need_the_token(stack, tmp_path):
    _, models = stack
    token = "v2-token-91c3"
    env = {**os.environ, "MODEL_DIR": str(models), "API_TOKEN": token, "SPOOL_DIR": str(tmp_path / "spool")}
    web = WebServer(env, tmp_path).wait_ready()
    try:
        assert raw(web.url, "GET", "/v2/health/live").status == 200
        assert raw(web.url, "GET", "/v2/health/ready").status in (200, 503)
        for method, path in [("GET", "/v2/models/xgb4.json"), ("POST", "/v2/models/xgb4.json/infer")]:
            refused = raw(web.url, method, path, headers={"Authorization": "Bearer wrong"})
            assert refused.status == 401 and refused.json() == {"error": "missing or wrong bearer token"}
        server = triton.InferenceServerClient(url=urlsplit(web.url).netloc)
        with pytest.raises(InferenceServerException) as refused_client:
            server.get_model_metadata("xgb4.json")
        assert refused_client.value.status() == "401"
        bearer = {"Authorization": f"Bearer {token}"}
        assert server.get_model_metadata("xgb4.json", headers=bearer)["platform"] == "xgboost"
        answer = server.infer("xgb4.json", [tensor(ROWS[:1], "FP64")], headers=bearer)
        assert answer.as_numpy("predict").shape == (1,)
        server.close()
    finally:
        web.stop()


# -- inference ------------------------------------------------------------------------


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_tree_models_infer_like_their_library(client, stack, name, datatype):
    _, models = stack
    features = ROWS.astype(np.float32 if datatype == "FP32" else np.float64)
    outputs = [triton.InferRequestedOutput("predict", binary_data=False)]
    result = client.infer(name, [tensor(features, datatype)], outputs=outputs, request_id="req-7")
    expected = library_predictions(models, name, features)
    np.testing.assert_allclose(result.as_numpy("predict"), expected, atol=TOLERANCE, rtol=0)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == name
    assert response["model_version"] == version_of(models / name)
    assert response["parameters"]["prediction_id"]


def test_default_tritonclient_outputs_are_answered_as_json(client, stack):
    # No requested outputs: tritonclient asks for binary outputs; JSON is what it gets, and reads.
    _, models = stack
    result = client.infer("gbm4.txt", [tensor(ROWS, "FP64")])
    expected = library_predictions(models, "gbm4.txt", ROWS)
    np.testing.assert_allclose(result.as_numpy("predict"), expected, atol=TOLERANCE, rtol=0)


def test_the_lstm_infers_like_torch(client, stack):
    _, models = stack
    result = client.infer("lstm4.pt", [tensor(SEQUENCES, "FP32")])
    expected = library_predictions(models, "lstm4.pt", SEQUENCES)
    np.testing.assert_allclose(result.as_numpy("predict").ravel(), expected, atol=TOLERANCE, rtol=0)


# The bodies of Seldon's MLServer iris examples, verbatim (SeldonIO/seldon-core, docs of
# `seldon model infer iris ...` and the MLServer iris notebooks), with MLServer's request
# parameters (`content_type`), requested outputs and `id` as its docs add them.
MLSERVER_BODIES = [
    {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]},
    {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]}]},
    {
        "parameters": {"content_type": "np"},
        "inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}],
    },
    {
        "inputs": [
            {
                "name": "predict",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"content_type": "np"},
                "data": [1, 2, 3, 4],
            }
        ],
        "outputs": [{"name": "predict"}],
    },
    {
        "id": "057ae95c-e6bc-4f57-babf-0817ff171729",
        "inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}],
    },
]


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("body", MLSERVER_BODIES)
def test_mlserver_example_requests_work_as_written(stack, name, body):
    web, models = stack
    answer = post(web.url, f"/v2/models/{name}/infer", body)
    assert answer.status == 200, answer.body
    response = answer.json()
    assert response.get("id") == body.get("id")
    [output] = response["outputs"]
    assert output["name"] == "predict" and output["shape"] == [1] and output["datatype"] == "FP64"
    expected = library_predictions(models, name, np.array([[1, 2, 3, 4]], dtype=np.float32))
    np.testing.assert_allclose(output["data"], expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    ("datatype", "data", "meant"),
    [
        ("INT32", [[1, -2, 3, 4], [0, 0, 7, -8]], [[1, -2, 3, 4], [0, 0, 7, -8]]),
        ("INT64", [1, -2, 3, 4, 0, 0, 7, -8], [[1, -2, 3, 4], [0, 0, 7, -8]]),
        ("BOOL", [[True, False, True, False], [False, False, True, True]], [[1, 0, 1, 0], [0, 0, 1, 1]]),
    ],
)
def test_integer_and_bool_tensors_predict_as_their_numbers(stack, datatype, data, meant):
    web, models = stack
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": datatype, "data": data}]}
    answer = post(web.url, "/v2/models/gbm4.txt/infer", body)
    assert answer.status == 200, answer.body
    expected = library_predictions(models, "gbm4.txt", np.array(meant, dtype=np.float64))
    np.testing.assert_allclose(answer.json()["outputs"][0]["data"], expected, atol=TOLERANCE, rtol=0)


def test_a_versioned_infer_takes_the_content_hash(stack):
    web, models = stack
    version = version_of(models / "xgb4.json")
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": ROWS[:2].ravel().tolist()}]}
    answer = post(web.url, f"/v2/models/xgb4.json/versions/{version}/infer", body)
    assert answer.status == 200 and answer.json()["model_version"] == version
    stale = post(web.url, "/v2/models/xgb4.json/versions/0123456789abcdef/infer", body)
    assert stale.status == 404 and "has no kept version '0123456789abcdef'" in stale.json()["error"]


def test_a_v2_infer_is_counted_and_echoes_its_request_id(stack):
    web, _ = stack
    route = "/v2/models/<name>/infer"
    before = value(
        scrape(web.url), "http_request_duration_seconds_count", method="POST", route=route, status="200"
    )
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    answer = post(web.url, "/v2/models/gbm4.txt/infer", body, **{"X-Request-ID": "v2-request-42"})
    assert answer.status == 200 and answer.headers["X-Request-ID"] == "v2-request-42"

    def counted() -> float:
        return value(
            scrape(web.url), "http_request_duration_seconds_count", method="POST", route=route, status="200"
        )

    # Observed and logged after the answer (web.answered), by whichever web worker answered;
    # the earlier tests' infers may still be on their way into `before` (test_metrics counts
    # exactly).
    wait_for(lambda: counted() >= before + 1, 10, "the infer counted")

    def logged() -> bool:
        access = [json.loads(line) for line in web.log().splitlines() if line.startswith("{")]
        return any(
            entry.get("logger") == "web.access" and entry.get("request_id") == "v2-request-42"
            for entry in access
        )

    wait_for(logged, 10, "the infer's access line")


# -- errors ---------------------------------------------------------------------------


def test_tritonclient_errors_carry_status_and_message(client):
    def refused(*args, **kwargs) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as error:
            client.infer(*args, **kwargs)
        return error.value

    unknown = refused("no-such-model.json", [tensor(ROWS, "FP64")])
    assert unknown.status() == "404" and "no model named 'no-such-model.json'" in unknown.message()
    narrow = refused("xgb4.json", [tensor(ROWS[:, :3], "FP64")])
    assert narrow.status() == "400" and "has 3 features; the model takes 4" in narrow.message()
    two = refused("xgb4.json", [tensor(ROWS, "FP64"), tensor(ROWS, "FP64")])
    assert two.status() == "400" and "takes one input tensor" in two.message()
    proba = refused(
        "xgb4.json", [tensor(ROWS, "FP64")], outputs=[triton.InferRequestedOutput("proba", False)]
    )
    assert proba.status() == "400" and "unknown output 'proba'" in proba.message()
    binary = triton.InferInput("input-0", list(ROWS.shape), "FP64")
    binary.set_data_from_numpy(ROWS)  # binary_data=True, tritonclient's default
    refused_binary = refused("xgb4.json", [binary])
    assert refused_binary.status() == "400" and "binary tensor data extension is not supported" in (
        refused_binary.message()
    )
    strings = refused("xgb4.json", [tensor(np.array([["a", "b", "c", "d"]], dtype=object), "BYTES")])
    assert strings.status() == "400" and "datatype" in strings.message()


def infer_body(shape: object, datatype: object, data: object) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


UGLY = [
    # (method, path, body, headers, status, a piece of the message)
    ("POST", "/v2/models/xgb4.json/infer", b"{not json", {}, 400, "must be a JSON document"),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        b"\x00\xff\xfe",
        {"Content-Type": "application/octet-stream"},
        400,
        "JSON",
    ),
    ("POST", "/v2/models/xgb4.json/infer", b"[1, 2]", {}, 400, "invalid request body"),
    ("POST", "/v2/models/xgb4.json/infer", b'{"inputs": []}', {}, 400, "inputs"),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", ["1", 2, 3, 4]),
        {},
        400,
        "must be numbers",
    ),
    ("POST", "/v2/models/xgb4.json/infer", infer_body([1, 4], "INT32", [1.5, 2, 3, 4]), {}, 400, "integers"),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "INT32", [2**40, 2, 3, 4]),
        {},
        400,
        "INT32 range",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "BOOL", [1, 0, 1, 0]),
        {},
        400,
        "true or false",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", [1e39, 2, 3, 4]),
        {},
        400,
        "FP32 range",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", [10**400, 2, 3, 4]),
        {},
        400,
        "FP32 range",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP64", [10**400, 2.5, 3, 4]),
        {},
        400,
        "too large",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([-1, 4], "FP32", [1, 2, 3, 4]),
        {},
        400,
        "greater than",
    ),
    ("POST", "/v2/models/xgb4.json/infer", infer_body([10**7, 4], "FP32", [1]), {}, 400, "shape"),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", [1, 2, 3]),
        {},
        400,
        "3 values for shape",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([2, 4], "FP32", [[1, 2, 3, 4]]),
        {},
        400,
        "nested unlike",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", [[1, 2], [3, 4]]),
        {},
        400,
        "nested unlike",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([4], "FP32", [1, 2, 3, 4]),
        {},
        400,
        "[rows, features]",
    ),
    ("POST", "/v2/models/xgb4.json/infer", infer_body([0, 4], "FP32", []), {}, 400, "empty"),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, Infinity]}]}',
        {},
        400,
        "infinite",
    ),
    (
        "POST",
        "/v2/models/lstm4.pt/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 1, 4], "datatype": "FP32", "data": [1, 2, 3, NaN]}]}',
        {},
        400,
        "NaN",
    ),
    (
        "POST",
        "/v2/models/xgb4.json/infer",
        infer_body([1, 4], "FP32", [1, 2, 3, 4]),
        {"Inference-Header-Content-Length": "10"},
        400,
        "binary tensor data extension",
    ),
    ("POST", "/v2/models/xgb4.json/infer", b"[" * 100_000 + b"]" * 100_000, {}, 400, "nested too deeply"),
    (
        "POST",
        "/v2/models/..%2F..%2Fetc%2Fpasswd/infer",
        infer_body([1, 4], "FP32", [1, 2, 3, 4]),
        {},
        404,
        "",
    ),
    ("GET", "/v2/models/..%2F..%2Fetc/ready", None, {}, 404, ""),
    ("GET", "/v2/models/..passwd/ready", None, {}, 400, "must not start with"),
    ("GET", "/v2/models/passwd/ready", None, {}, 404, "no model named"),
    ("GET", "/v2/models/a%5Cb.json", None, {}, 400, ""),
    ("GET", "/v2/models/xgb4.json/infer", None, {}, 405, "not allowed"),
    ("GET", "/v2/models/xgb4.json/versions/..%2F..%2Fx", None, {}, 404, ""),
    ("GET", "/v2/no/such/route", None, {}, 404, "not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), UGLY)
def test_bad_requests_get_a_protocol_error_never_a_500(stack, method, path, body, headers, status, message):
    web, _ = stack
    answer = raw(web.url, method, path, body, {"Content-Type": "application/json", **headers})
    assert answer.status == status, answer.body[:300]
    error = answer.json()
    assert set(error) == {"error"} and isinstance(error["error"], str)
    assert message.lower() in error["error"].lower()


def test_a_body_over_max_request_bytes_is_a_protocol_413(app):
    # In process: the server answers before reading the body and closes, so a client's send breaks
    # (tests/test_web_server.py sends such bodies to the real server).
    huge = b" " * (app.config["MAX_CONTENT_LENGTH"] + 1)
    answer = app.test_client().post("/v2/models/xgb4.json/infer", data=huge, content_type="application/json")
    assert answer.status_code == 413 and "exceeds the capacity limit" in answer.get_json()["error"]
