"""Bearer-token check for every /api/v1 route, and the V2 model routes, when API_TOKEN is set.

The check sits on the app, on the path prefix, so a route added later under /api/v1 is
covered without doing anything; /healthz, /readyz and /metrics stay open, and so does
the API's documentation (`web.openapi`: it holds no data, and a browser could not send
the token to load the docs page).
"""

import hmac

from flask import Flask, request

from web.errors import ApiError
from web.settings import current_settings

API_PREFIX = "/api/v1"
# The Open Inference Protocol's model routes serve the same models (its health routes, like
# /healthz and /readyz, stay open).
PROTECTED_PREFIXES = (API_PREFIX, "/v2/models")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def protects(path: str, open_paths: tuple[str, ...] = ()) -> bool:
    """Whether `path` needs the token: under /api/v1 (or /v2/models) and not one of the open paths."""
    return any(_under(path, prefix) for prefix in PROTECTED_PREFIXES) and not any(
        _under(path, open_path) for open_path in open_paths
    )


def require_token_for_api(app: Flask, open_paths: tuple[str, ...] = ()) -> None:
    """Check the token on every /api/v1 path but `open_paths` (and what lies under them)."""
    app.extensions["api_open_paths"] = open_paths

    @app.before_request
    def _check_token() -> None:
        token = current_settings().api_token
        if token is None or not protects(request.path, open_paths):
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
