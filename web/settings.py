"""The settings a web app was built with: `create_app(settings)` keeps them on the app.

Web code reads them here, never `config.get_settings()`, so an app built from explicit
settings (a test's, say) runs on those alone, whatever the process-wide default holds.
"""

from __future__ import annotations

from flask import Flask, current_app

from config import Settings

KEY = "settings"


def keep_settings(app: Flask, settings: Settings) -> None:
    app.extensions[KEY] = settings


def current_settings(app: Flask | None = None) -> Settings:
    """The settings of `app`, by default the app handling this request or command."""
    return (app if app is not None else current_app).extensions[KEY]
