"""The emulator's app factory."""

from __future__ import annotations

from flask import Flask

from . import admin, files, legacy, uploads, web, web_files
from .context import EXTENSION_KEY
from .state import EmulatorState


def create_emulator_app(state: EmulatorState | None = None) -> Flask:
    """A Flask app serving both protocols' routes and the ``/_emulator`` control API."""
    app = Flask(__name__)
    app.extensions[EXTENSION_KEY] = state or EmulatorState()
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(web.bp)
    app.register_blueprint(web_files.bp)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(uploads.bp)
    app.register_blueprint(admin.bp)
    return app
