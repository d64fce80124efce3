"""The operator's surface: ``GET /status`` (JSON, or an HTML page for a browser) and
``GET /metrics`` (Prometheus), both behind ``ADMIN_KEY``.

Without ``ADMIN_KEY`` nothing here is registered: both paths are unknown routes (404), and no
request is counted. API keys are callers' keys, never admin keys.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from . import __version__, metrics, status_page
from .auth import bearer_token
from .errors import AuthenticationFailed
from .routes import service
from .service import KimiService
from .status import build_report, metrics_snapshot
from .status_streams import StreamCensus

bp = Blueprint("status", __name__)

ADMIN_KEY_HEADER = "X-Admin-Key"
# A browser asks for the key itself when told so (user name: anything, password: ADMIN_KEY).
BASIC_CHALLENGE = 'Basic realm="kimi-free-api admin", charset="UTF-8"'
JSON, HTML = "application/json", "text/html"
# The HTML page reloads itself this often (seconds).
PAGE_REFRESH_SECONDS = 30
# The page loads nothing from anywhere (its style is inline) and is shown in no other site's frame.
PAGE_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


class AdminAuthFailed(AuthenticationFailed):
    """The admin key is missing or wrong."""

    code = "invalid_admin_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": BASIC_CHALLENGE}


def init_status(app: Flask) -> None:
    """Register /status and /metrics and the request counter, when ``ADMIN_KEY`` is set."""
    kimi: KimiService = app.extensions["kimi"]
    if not kimi.settings.admin_key:
        return
    census = StreamCensus(kimi.store, kimi.stream_slots)
    app.extensions["kimi_stream_census"] = census
    app.register_blueprint(bp)
    app.after_request(_count_request)
    census.start()


@bp.get("/status")
def status() -> Response:
    _require_admin_key()
    report = build_report(service(), current_app.extensions["kimi_stream_census"], __version__)
    if request.accept_mimetypes.best_match((JSON, HTML), default=JSON) == HTML:
        page = render_template(
            "status.html",
            report=report,
            rows=status_page.account_rows(report),
            ago=status_page.ago,
            clock_time=status_page.clock_time,
            refresh_seconds=PAGE_REFRESH_SECONDS,
        )
        response = Response(page, mimetype=HTML)
        response.headers["Content-Security-Policy"] = PAGE_SECURITY_POLICY
    else:
        response = jsonify(report.to_json())
    response.headers["Vary"] = "Accept"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    _require_admin_key()
    counts, healthy = metrics_snapshot(service(), current_app.extensions["kimi_stream_census"])
    families = metrics.account_families(counts, healthy)
    response = Response(metrics.render(families), content_type=metrics.CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def _require_admin_key() -> None:
    """401 unless the request carries ``ADMIN_KEY`` (Bearer, ``X-Admin-Key`` or Basic)."""
    supplied = _supplied_admin_key()
    expected = service().settings.admin_key
    # Digests of equal length: the comparison's time tells nothing, not even the key's length.
    if not supplied or not hmac.compare_digest(_digest(supplied), _digest(expected)):
        raise AdminAuthFailed(
            "Invalid admin key: send Authorization: Bearer <ADMIN_KEY> (or X-Admin-Key)."
        )


def _supplied_admin_key() -> str:
    if ADMIN_KEY_HEADER in request.headers:
        return request.headers[ADMIN_KEY_HEADER].strip()
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic":
        return authorization.password or ""
    return bearer_token(request.headers.get("Authorization"))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _count_request(response: Response) -> Response:
    rule = request.url_rule
    metrics.count_request(rule.rule if rule else None, request.method, response.status_code)
    return response
