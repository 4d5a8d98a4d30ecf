"""Bearer-token check for every /api/v1 route when API_TOKEN is set.

The check sits on the app, on the path prefix, so a route added later under /api/v1 is
covered without doing anything; /healthz, /readyz and /metrics stay open.
"""

import hmac

from flask import Flask, request

from config import get_settings
from web.errors import ApiError

API_PREFIX = "/api/v1"


def protects(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def require_token_for_api(app: Flask) -> None:
    @app.before_request
    def _check_token() -> None:
        token = get_settings().api_token
        if token is None or not protects(request.path):
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
