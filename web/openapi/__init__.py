"""`/api/v1/openapi.json` and the Swagger UI page at `/api/v1/docs`.

The page's assets come from the pinned flask-swagger-ui package and are served by this
app: nothing is loaded from the internet. Both stay open when API_TOKEN is set (they
hold no data; a browser could not send the token to load the page), and Swagger UI's
"Authorize" button sends it with the calls made from the page.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from web.openapi.document import build_document

DOCUMENT_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"

blueprint = Blueprint("openapi", __name__)


@cache
def document() -> dict[str, Any]:
    return build_document(version("tradebot-journal"))


@blueprint.get(DOCUMENT_URL)
def openapi_document():
    return jsonify(document())


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.register_blueprint(
        get_swaggerui_blueprint(
            DOCS_URL,
            DOCUMENT_URL,
            # validatorUrl None: Swagger UI would otherwise show a badge from validator.swagger.io.
            config={
                "app_name": "Trade journal and model serving API",
                "persistAuthorization": True,
                "validatorUrl": None,
            },
            blueprint_name="docs",
        )
    )
