"""Bearer-token check for /api/v1 when API_TOKEN is set."""

import hmac

from flask import Blueprint, request

from config import get_settings
from web.errors import ApiError


def require_token(blueprint: Blueprint) -> None:
    @blueprint.before_request
    def _check_token() -> None:
        token = get_settings().api_token
        if token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
