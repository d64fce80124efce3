"""kimi-free-api: an OpenAI-compatible API in front of your own Kimi web chat accounts."""

from __future__ import annotations

import logging

from flask import Flask

from .cors import init_cors
from .error_handlers import init_error_handlers
from .service import KimiService
from .settings import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None, service: KimiService | None = None) -> Flask:
    """Build the app. Tests pass their own settings; deployments read the environment."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    # Werkzeug's own cap stays one byte above ours, so that routes/_json_body answers first
    # (in OpenAI's shape) and nothing else reads a body past the limit either.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes + 1
    app.json.ensure_ascii = False
    app.extensions["kimi"] = service or KimiService(settings)
    init_cors(app)
    init_error_handlers(app)
    from .anthropic_routes import bp as anthropic_bp
    from .responses_routes import bp as responses_bp
    from .routes import bp
    from .status_routes import init_status

    app.register_blueprint(bp)
    app.register_blueprint(anthropic_bp)
    app.register_blueprint(responses_bp)
    init_status(app)  # /status and /metrics, only with ADMIN_KEY
    logging.getLogger("kimi").setLevel(logging.INFO)
    return app
