"""The Open Inference Protocol (V2 REST: KServe, Triton, MLServer clients) on the web's port.

The routes answer from what /api/v1/ml answers from (MODEL_DIR, the workers' reports)
and predict through the same `PredictionClient` (lane, batching, workers); only the
shapes of requests, answers and errors are the protocol's.
"""

from flask import Flask

from web.v2.errors import answer_errors_in_protocol_shape
from web.v2.routes import blueprint

PREFIX = "/v2"


def register(app: Flask) -> None:
    app.register_blueprint(blueprint, url_prefix=PREFIX)
    answer_errors_in_protocol_shape(app, PREFIX)
