"""The HTTP surface: OpenAI's chat completions and models, token check, health."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .auth import bearer_token, is_api_key, require_api_key, resolve_pool
from .body_deadline import body_with_deadline
from .chat_request import ChatRequest, parse_chat_request
from .completions import TurnStream
from .encoder import CompletionEncoder, Reply
from .errors import (
    AuthenticationFailed,
    BadRequest,
    InvalidJsonOutput,
    KimiError,
    NotFound,
    RequestTooLarge,
)
from .json_body import parse_json_body, read_limited, too_large_message
from .models import model_list
from .service import KimiService
from .streaming import stream_turn
from .structured import repair_instruction
from .tools import call_reminder

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

WELCOME = """kimi-free-api is running.

POST /v1/chat/completions   OpenAI chat completions (stream or not)
POST /v1/responses          OpenAI Responses API (GET, DELETE /v1/responses/<id>)
GET  /v1/models             model list (GET /v1/models/<id> for one)
POST /token/check           {"token": "..."} -> {"live": true|false|null, ...}
GET  /healthz               status

Authorization: Bearer <your Kimi refresh_token>[,<another>...]   (or an API key, see README)
"""


def service() -> KimiService:
    return current_app.extensions["kimi"]


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions() -> Response:
    settings = service().settings
    # Who is calling is settled from the headers, before a byte of the body is read.
    pool = resolve_pool(settings, request.headers.get("Authorization"))
    chat = parse_chat_request(
        _json_body(),
        max_files=settings.max_files_per_message,
        reasoning_mode=settings.reasoning_output,
    )
    turn = service().start_turn(chat, pool)
    if chat.stream:
        return _stream(chat, turn)
    with turn:
        reply = _collect(chat, turn)
    return jsonify(CompletionEncoder(chat).completion(reply))


def _collect(chat: ChatRequest, turn: TurnStream) -> Reply:
    """The whole answer. Two things are sent back once for repair, in the same Kimi chat: JSON
    that fails ``response_format``, and an answer without the call ``tool_choice`` requires."""
    try:
        reply = Reply.collect(turn)
    except InvalidJsonOutput as exc:
        log.info("Asking Kimi once to repair JSON that failed the response_format: %s", exc)
        return Reply.collect(turn.follow_up(repair_instruction(exc)))
    tools = chat.tools
    if tools and tools.call_required and not reply.tool_calls and reply.finish_reason == "stop":
        log.info("Asking Kimi once for the function call that tool_choice requires")
        return Reply.collect(turn.follow_up(call_reminder(tools)))
    return reply


def _stream(chat: ChatRequest, turn: TurnStream) -> Response:
    return stream_turn(service(), turn, CompletionEncoder(chat).stream)


@bp.get("/v1/models")
@bp.get("/models")
def models() -> Response:
    return jsonify(model_list(_model_ids(), created=int(time.time())))


@bp.get("/v1/models/<path:model_id>")
@bp.get("/models/<path:model_id>")
def model(model_id: str) -> Response:
    if model_id not in _model_ids():
        raise NotFound(f"The model {model_id!r} does not exist.", param="model")
    return jsonify(model_list([model_id], created=int(time.time()))["data"][0])


def _model_ids() -> list[str]:
    """Anyone may read the static list; credentials that are sent must be valid (UIs check)."""
    authorization = request.headers.get("Authorization")
    try:
        pool = resolve_pool(service().settings, authorization)
    except AuthenticationFailed:
        if bearer_token(authorization):
            raise
        return service().model_ids(None)
    service().verify_pool(pool)
    return service().model_ids(pool)


@bp.post("/token/check")
def token_check() -> Response:
    """Whether Kimi accepts a token; never rotates or keeps it (see kimi/token_check.py)."""
    kimi = service()
    require_api_key(kimi.settings, request.headers.get("Authorization"))
    kimi.token_checks.hit(request.remote_addr or "unknown")
    body = _json_body()
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise BadRequest('Send {"token": "<Kimi refresh or access token>"}.', param="token")
    return jsonify(kimi.check_token(token.strip()).to_body())


@bp.get("/ping")
def ping() -> Response:
    return Response("pong", mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    """Status for anyone (a load balancer); the configuration only for a caller with an API key."""
    kimi = service()
    try:
        store_ok = kimi.store.ping()
    except KimiError:
        store_ok = False
    body: dict[str, Any] = {"status": "ok" if store_ok else "degraded"}
    if is_api_key(kimi.settings, bearer_token(request.headers.get("Authorization"))):
        body.update(
            protocol=kimi.settings.protocol,
            store="ok" if store_ok else "unavailable",
            server_accounts=len(kimi.settings.kimi_tokens),
        )
    return jsonify(body), (200 if store_ok else 503)


@bp.get("/")
def index() -> Response:
    return Response(WELCOME, mimetype="text/plain")


def _json_body() -> Any:
    """The body's JSON value, read only up to ``MAX_REQUEST_MB`` (chunked bodies too)."""
    if not request.is_json:
        raise BadRequest("The request body must be JSON (Content-Type: application/json).")
    settings = service().settings
    limit = settings.max_request_bytes
    if (request.content_length or 0) > limit:
        raise RequestTooLarge(too_large_message(limit))
    body = body_with_deadline(request.stream, request.environ, settings.request_body_timeout)
    return parse_json_body(read_limited(body, limit))
