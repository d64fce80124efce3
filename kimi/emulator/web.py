"""The emulated Kimi web backend: Connect RPC routes of the main host and the auth host."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from kimi.upstream.connect import FrameDecoder, FrameError, encode_frame

from .context import current_state
from .errors import EmulatorError
from .faults import CHAT_FAULTS, HTTP_FAULTS, REFRESH_FAULTS, Fault
from .replies import (
    PlannedFrame,
    ReplyRequest,
    ends_reply,
    error_stream,
    plan_reply,
    prompt_line,
    reply_text,
)
from .state import CallRecord, EmulatorConfig, User
from .tokens import TokenError

log = logging.getLogger(__name__)

bp = Blueprint("kimi_emulator_web", __name__)

CONNECT_JSON = "application/connect+json"
SPLIT_PIECE_SIZE = 3  # bytes per write when frames are split, so even the header splits
CHAT_NAME_LENGTH = 20
LOGGED_HEADERS = (
    "X-Msh-Platform",
    "X-Msh-Device-Id",
    "X-Msh-Session-Id",
    "X-Traffic-Id",
    "X-Msh-Version",
    "Connect-Protocol-Version",
    "Content-Type",
    "Origin",
    "Referer",
)
AVAILABLE_MODELS = [
    {
        "scenario": "SCENARIO_K2D5",
        "displayName": "K2.5",
        "thinking": False,
        "kimiPlusId": "",
        "agentMode": False,
        "description": "Fast answers for everyday questions",
    },
    {
        "scenario": "SCENARIO_K2D5",
        "displayName": "K2.5 Thinking",
        "thinking": True,
        "kimiPlusId": "",
        "agentMode": False,
        "description": "Thinks step by step before answering",
    },
    {
        "scenario": "SCENARIO_K2",
        "displayName": "K2",
        "thinking": False,
        "kimiPlusId": "",
        "agentMode": False,
        "description": "The previous generation model",
    },
    {
        "scenario": "SCENARIO_OK_COMPUTER",
        "displayName": "OK Computer",
        "thinking": False,
        "kimiPlusId": "",
        "agentMode": True,
        "description": "An agent that works on multi-step tasks",
    },
]
DEFAULT_SCENARIO = {"scenario": "SCENARIO_K2D5", "thinking": False}
HTTP_FAULT_ERRORS = {
    "unauthorized": EmulatorError("unauthenticated", "invalid claims: token is not active"),
    "limit": EmulatorError("resource_exhausted", "too many requests, try again in 3 hours"),
    "server_error": EmulatorError("internal", "internal server error"),
    "busy": EmulatorError("aborted", "a reply is still being generated in this chat"),
}


@bp.before_request
def log_call_arrival() -> None:
    headers = {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers}
    record = CallRecord(
        method=request.method,
        path=request.path,
        headers=headers,
        auth="Authorization" in request.headers,
        body=_loggable_body(),
    )
    g.emulator_call = current_state().begin_call(record)


@bp.after_request
def log_call_status(response: Response) -> Response:
    current_state().update_call(g.emulator_call, status=response.status_code)
    return response


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    return error.to_response()


@bp.post("/api/account.gateway.v1.AuthService/RefreshToken")
def refresh_token() -> Response:
    """Spend a refresh token for a new access and refresh token (rotation)."""
    body = _json_body()
    token = body.get("refresh_token") or body.get("refreshToken")
    if not isinstance(token, str):
        raise EmulatorError("invalid_argument", "refresh_token is required")
    state = current_state()
    if state.take_fault(REFRESH_FAULTS, state.token_owner(token, "refresh")):
        raise EmulatorError("internal", "auth service unavailable")
    try:
        tokens = state.refresh(token)
    except TokenError as exc:
        raise EmulatorError("unauthenticated", str(exc)) from exc
    state.update_call(g.emulator_call, user_id=tokens.user_id)
    return jsonify(accessToken=tokens.access_token, refreshToken=tokens.refresh_token)


@bp.post("/apiv2/kimi.gateway.order.v1.SubscriptionService/GetSubscription")
def get_subscription() -> Response:
    """The user's plan: the cheap way clients check that a credential is alive."""
    user = _authenticated_user()
    return jsonify(subscription={"userId": user.user_id, "userName": user.name, "type": "free"})


@bp.post("/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels")
def get_available_models() -> Response:
    """The fixed model list."""
    _authenticated_user()
    return jsonify(availableModels=AVAILABLE_MODELS, defaultScenario=DEFAULT_SCENARIO)


@bp.post("/apiv2/kimi.chat.v1.ChatService/DeleteChat")
def delete_chat() -> Response:
    """Mark one of the user's chats deleted."""
    user = _authenticated_user()
    body = _json_body()
    chat_id = body.get("chat_id") or body.get("chatId")
    if not isinstance(chat_id, str):
        raise EmulatorError("invalid_argument", "chat_id is required")
    current_state().delete_chat(user.user_id, chat_id)
    return jsonify({})


@bp.post("/apiv2/kimi.gateway.chat.v1.ChatService/Chat")
def chat() -> Response:
    """Start a turn and stream its answer as Connect frames."""
    state = current_state()
    user = _authenticated_user()
    body = _chat_frame()
    reply_request = _reply_request(body)
    chat_id, parent_id = _str_field(body, "chat_id"), _str_field(body.get("message"), "parent_id")
    state.check_turn(user.user_id, chat_id, parent_id)
    fault = state.take_fault(CHAT_FAULTS, user.user_id)
    if fault and fault.name in HTTP_FAULTS:
        return _http_fault_response(fault)
    if fault and fault.name == "limit_in_stream":
        message = "too many requests, try again in 3 hours"
        return _stream_response(error_stream("resource_exhausted", message), state.config())
    chat_name = prompt_line(reply_request.prompt)[:CHAT_NAME_LENGTH] or "New chat"
    turn = state.open_turn(user.user_id, chat_id, parent_id, reply_request.prompt, chat_name)
    plan = plan_reply(turn, reply_request, fault)
    state.set_reply_text(turn, reply_text(plan))
    response = _stream_response(plan, state.config(), lambda: state.close_turn(turn))
    # Also when the client leaves mid-stream, before the reply was over.
    response.call_on_close(lambda: state.close_turn(turn))
    return response


def _authenticated_user() -> User:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise EmulatorError("unauthenticated", "missing access token")
    try:
        user = current_state().authenticate(token.strip())
    except TokenError as exc:
        raise EmulatorError("unauthenticated", str(exc)) from exc
    current_state().update_call(g.emulator_call, user_id=user.user_id)
    return user


def _json_body() -> dict[str, Any]:
    data = request.get_data()
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmulatorError("invalid_argument", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise EmulatorError("invalid_argument", "body is not a JSON object")
    return body


def _chat_frame() -> dict[str, Any]:
    """The request's one Connect frame, strictly checked."""
    if request.mimetype != CONNECT_JSON:
        raise EmulatorError("invalid_argument", f"content type must be {CONNECT_JSON}")
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(request.get_data())
    except FrameError as exc:
        raise EmulatorError("invalid_argument", f"invalid frame: {exc}") from exc
    if len(frames) != 1 or decoder.pending or frames[0].flags != 0:
        raise EmulatorError("invalid_argument", "the body must be exactly one Connect frame")
    if not isinstance(frames[0].message, dict):
        raise EmulatorError("invalid_argument", "the frame must hold a JSON object")
    return frames[0].message


def _loggable_body() -> Any:
    """The body as JSON for the call log, or None; never raises (validation is the route's)."""
    data = request.get_data()
    if request.mimetype == CONNECT_JSON:
        try:
            frames = FrameDecoder().feed(data)
        except FrameError:
            return None
        return frames[0].message if len(frames) == 1 else None
    try:
        return json.loads(data) if data.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _reply_request(body: dict[str, Any]) -> ReplyRequest:
    message = body.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    first = blocks[0] if isinstance(blocks, list) and blocks else None
    text = first.get("text") if isinstance(first, dict) else None
    prompt = text.get("content") if isinstance(text, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise EmulatorError("invalid_argument", "message.blocks[0].text.content is required")
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    search = any(isinstance(t, dict) and t.get("type") == "TOOL_TYPE_SEARCH" for t in tools)
    return ReplyRequest(prompt, thinking=bool(options.get("thinking")), search=search)


def _str_field(container: Any, name: str) -> str:
    value = container.get(name, "") if isinstance(container, dict) else ""
    if not isinstance(value, str):
        raise EmulatorError("invalid_argument", f"{name} must be a string")
    return value


def _http_fault_response(fault: Fault) -> Response:
    log.info("answering a Chat call with the %s fault", fault.name)
    if fault.name == "garbage":
        return Response("<html>gateway error</html>", status=200, content_type="text/html")
    return HTTP_FAULT_ERRORS[fault.name].to_response()


def _nothing() -> None:
    return None


def _stream_response(
    plan: list[PlannedFrame], config: EmulatorConfig, on_reply_over: Callable[[], None] = _nothing
) -> Response:
    body = _write_frames(plan, config, on_reply_over)
    return Response(body, status=200, content_type=CONNECT_JSON)


def _write_frames(
    plan: list[PlannedFrame], config: EmulatorConfig, on_reply_over: Callable[[], None]
) -> Iterator[bytes]:
    """Each frame its own chunk, or 3-byte chunks when ``split_frames`` is on.

    ``on_reply_over`` runs before the first frame that ends the reply is written (or when the
    plan runs out): a client that has read the end may continue the chat at once.
    """
    for index, frame in enumerate(plan):
        delay = frame.pause + (config.frame_delay if index else 0.0)
        if delay > 0:
            time.sleep(delay)
        if ends_reply(frame):
            on_reply_over()
        data = encode_frame(frame.message, frame.flags)
        if not config.split_frames:
            yield data
            continue
        for start in range(0, len(data), SPLIT_PIECE_SIZE):
            yield data[start : start + SPLIT_PIECE_SIZE]
    on_reply_over()
