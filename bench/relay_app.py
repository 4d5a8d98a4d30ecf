"""The third side of bench/predict.py: the stack's dispatch path with nothing around it.

gunicorn --chdir bench "relay_app:create_app()"      (the project installed in the venv)

The same lane, worker and reply keys as the stack (`PredictionClient.predict`), but none
of the API's per-request work: no token check, request id, access line, metrics,
pydantic model, shape check or model lookup. What separates it from the stack is what
that work costs; what separates it from the in-process baseline is the dispatch itself.
"""

import numpy
import orjson
from flask import Flask, request

from tasks.web_clients import PredictionClient


def create_app() -> Flask:
    app = Flask(__name__)
    client = PredictionClient()

    @app.post("/api/v1/ml/predict")
    def predict():
        body = orjson.loads(request.get_data())
        rows = numpy.asarray(body["features"], dtype=numpy.float64)
        payload = client.predict(body["model_name"], rows, None, 30)
        return app.response_class(orjson.dumps(payload), mimetype="application/json")

    return app
