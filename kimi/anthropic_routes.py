"""The Anthropic surface: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

The same turn engine as chat completions, with Anthropic's request model, encoder and error
shape; errors raised here answer in Anthropic's shape, the OpenAI routes keep OpenAI's.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .anthropic_encoder import PING, Answer, MessageEncoder, error_body
from .anthropic_request import MessagesRequest, parse_messages_request
from .auth import Pool, resolve_pool
from .errors import KimiError
from .routes import _json_body, service
from .streaming import stream_turn
from .usage import estimate_tokens

log = logging.getLogger(__name__)
bp = Blueprint("anthropic", __name__)

API_KEY_HEADER = "x-api-key"


@bp.post("/v1/messages")
def messages() -> Response:
    pool = _pool()
    parsed = _parse(require_max_tokens=True)
    turn = service().start_turn(parsed.chat, pool)
    encoder = MessageEncoder(parsed)
    if parsed.stream:
        return stream_turn(service(), turn, encoder.stream, PING)
    with turn:
        answer = Answer.collect(turn, parsed)
    return jsonify(encoder.message(answer))


@bp.post("/v1/messages/count_tokens")
def count_tokens() -> Response:
    """The estimate ``usage`` reports, over the prompt the turn would send."""
    _pool()
    parsed = _parse(require_max_tokens=False)
    return jsonify({"input_tokens": estimate_tokens(parsed.chat.prompt)})


def _pool() -> Pool:
    """Anthropic clients send ``x-api-key`` (or ``Authorization: Bearer``, as Claude Code does
    with ANTHROPIC_AUTH_TOKEN); either is checked as the chat routes check a bearer token."""
    key = request.headers.get(API_KEY_HEADER, "").strip()
    authorization = f"Bearer {key}" if key else request.headers.get("Authorization")
    return resolve_pool(service().settings, authorization)


def _parse(*, require_max_tokens: bool) -> MessagesRequest:
    settings = service().settings
    return parse_messages_request(
        _json_body(),
        model_map=settings.anthropic_model_map,
        max_files=settings.max_files_per_message,
        require_max_tokens=require_max_tokens,
    )


@bp.errorhandler(KimiError)
def _kimi_error(exc: KimiError) -> Response:
    return _error_response(exc.status, exc.message, exc.headers())


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _error_response(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected_error(exc: Exception) -> Response:
    log.exception("Unexpected error: %s", type(exc).__name__)
    return _error_response(500, "The service hit an unexpected error.")


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error_body(status, message))
    response.status_code = status
    response.headers.update(headers or {})
    return response
