"""A web app of a test's own: the run's settings (conftest's environment) with overrides.

The settings are handed to `create_app`, the way a test configures an app, instead of
changing the environment; processes a test starts still get theirs from the environment.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from config import Settings


def web_app(**overrides: Any) -> Flask:
    from web import create_app  # at call time: the run's environment is set by then

    return create_app(Settings(**overrides))
