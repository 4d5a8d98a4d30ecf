"""The web app, built once for the generators that read it (its OpenAPI document, its log lines)."""

from __future__ import annotations

import logging
from functools import cache

from flask import Flask


@cache
def web_app() -> Flask:
    """The app on the settings' defaults, whatever the environment or `.env` say: building it
    connects to nothing, and the pages describe what a default install does."""
    from config import Settings
    from web import create_app

    # create_app sets up the root logger for the web's lines; the site's build keeps its own.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return create_app(Settings.model_construct())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
