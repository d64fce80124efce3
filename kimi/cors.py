"""CORS on every route, so browser clients (LobeChat, NextChat, ...) can call directly."""

from __future__ import annotations

from flask import Flask, Response, request

ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, OPTIONS"
MAX_AGE_SECONDS = "86400"


def init_cors(app: Flask) -> None:
    app.before_request(_answer_preflight)
    app.after_request(_add_cors_headers)


def _answer_preflight() -> Response | None:
    if request.method == "OPTIONS":
        return Response(status=204)
    return None


def _add_cors_headers(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = (
        request.headers.get("Access-Control-Request-Headers") or ALLOW_HEADERS
    )
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Max-Age"] = MAX_AGE_SECONDS
    return response
