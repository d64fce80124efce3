"""Every error answers in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .anthropic_encoder import error_body as anthropic_error_body
from .errors import KimiError

log = logging.getLogger(__name__)

# Routing errors (404, 405) are answered before any blueprint: this path gets Anthropic's shape.
ANTHROPIC_PATH = "/v1/messages"
HTTP_ERROR_TYPES = {
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def init_error_handlers(app: Flask) -> None:
    app.register_error_handler(KimiError, kimi_error_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.register_error_handler(Exception, _unexpected_error_response)


def kimi_error_response(exc: KimiError) -> Response:
    response = jsonify(exc.to_body())
    response.status_code = exc.status
    response.headers.update(exc.headers())
    return response


def _http_error_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    if request.path.startswith(ANTHROPIC_PATH):  # a 404/405 never reaches that blueprint
        response = jsonify(anthropic_error_body(status, exc.description or exc.name))
        response.status_code = status
        return response
    body = {
        "error": {
            "message": exc.description or exc.name,
            "type": HTTP_ERROR_TYPES.get(status, "invalid_request_error"),
            "param": None,
            "code": exc.name.lower().replace(" ", "_"),
        }
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _unexpected_error_response(exc: Exception) -> Response:
    log.exception("Unexpected error: %s", type(exc).__name__)
    return kimi_error_response(KimiError("The service hit an unexpected error."))
