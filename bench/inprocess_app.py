"""The baseline of bench/predict.py: the plan's design, a Flask app that predicts in-process.

gunicorn --chdir bench "inprocess_app:create_app()"      (MODEL_DIR from the environment)
"""

import os

import numpy as np
import xgboost
from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)
    path = os.path.join(os.environ["MODEL_DIR"], "xgboost_model.json")
    booster = xgboost.Booster(model_file=path)
    booster.set_param({"nthread": 1})

    @app.post("/api/v1/ml/predict")
    def predict():
        body = request.get_json(force=True)
        features = np.asarray(body["features"], dtype=np.float64)
        predictions = booster.inplace_predict(features, missing=np.nan)
        return jsonify(predictions=predictions.tolist(), model_name=body["model_name"])

    return app
