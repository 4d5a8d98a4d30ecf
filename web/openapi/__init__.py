"""`/api/v1/openapi.json` and the Swagger UI page at `/api/v1/docs`.

The page's assets come from the pinned flask-swagger-ui package and are served by this
app: nothing is loaded from the internet. Both stay open when API_TOKEN is set (they
hold no data; a browser could not send the token to load the page), and Swagger UI's
"Authorize" button sends it with the calls made from the page.

The document is the app's own (`document.build_document`): each view declares its
operation with `declare.documented`, next to its route.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from web.openapi.declare import BINARY, HTML, JSON, Answer, Documented, declare_endpoint, documented
from web.openapi.document import build_document

DOCUMENT_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"
ASSETS = ("text/html", "text/css", "text/javascript", "image/png")  # media types of its files

blueprint = Blueprint("openapi", __name__)


def document(app: Flask) -> dict[str, Any]:
    # Built on the first request, once every blueprint is registered, and kept with the app.
    if "openapi_document" not in app.extensions:
        app.extensions["openapi_document"] = build_document(app, version("tradebot-journal"))
    return app.extensions["openapi_document"]


@blueprint.get(DOCUMENT_URL)
@documented(
    operation_id="openapi",
    summary="This OpenAPI document",
    tag="docs",
    answers={200: Answer("OpenAPI 3.1", media={JSON: {"type": "object"}})},
)
def openapi_document():
    return jsonify(document(current_app))


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
    # Swagger UI's one view serves the page and its files, under two rules.
    declare_endpoint(
        app,
        "docs.show",
        Documented(
            rule=f"{DOCS_URL}/",
            operation_id="docs",
            summary="Interactive documentation (Swagger UI)",
            tag="docs",
            answers={200: Answer("the page", media=HTML)},
            description=f"`{DOCS_URL}` redirects here.",
        ),
        Documented(
            rule=f"{DOCS_URL}/<path:path>",
            operation_id="docsAsset",
            summary="The documentation page's assets",
            tag="docs",
            answers={
                200: Answer(
                    "a file of the Swagger UI distribution",
                    media={kind: BINARY for kind in ASSETS},
                )
            },
            errors=(404,),
            path={"path": {"type": "string", "examples": ["swagger-ui.css"]}},
        ),
    )
