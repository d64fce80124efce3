"""The emulated Kimi web backend: Connect RPC routes of the main host and the auth host."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .bodies import CONNECT_JSON, json_body
from .call_log import authenticated_user, note_caller, record_call_arrival, record_call_status
from .context import current_state, fail_on
from .errors import EmulatorError
from .faults import (
    ACCOUNT_FAULTS,
    CHAT_FAULTS,
    DELETE_FAULTS,
    GARBAGE_PAGE,
    HTTP_FAULT_ERRORS,
    HTTP_FAULTS,
    MODELS_FAULTS,
    REFRESH_FAULTS,
    Fault,
)
from .frames import FramingError, read_body, write_frame
from .replies import (
    PlannedFrame,
    ReplyRequest,
    chat_title,
    ends_reply,
    error_stream,
    plan_reply,
    reply_text,
)
from .scripts import scripted_reply
from .state import EmulatorConfig
from .streaming import OutgoingChunk, nothing_to_do, write_chunks
from .tokens import TokenError
from .web_files import message_files, with_files_read

log = logging.getLogger(__name__)

bp = Blueprint("kimi_emulator_web", __name__)
bp.before_request(record_call_arrival)
bp.after_request(record_call_status)

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


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    return error.to_response()


@bp.post("/api/account.gateway.v1.AuthService/RefreshToken")
def refresh_token() -> Response:
    """Spend a refresh token for a new access and refresh token (rotation)."""
    body = json_body()
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
    note_caller(tokens.user_id)
    return jsonify(accessToken=tokens.access_token, refreshToken=tokens.refresh_token)


@bp.post("/apiv2/kimi.gateway.order.v1.SubscriptionService/GetSubscription")
def get_subscription() -> Response:
    """The user's plan: the cheap way clients check that a credential is alive."""
    user = authenticated_user()
    fail_on(ACCOUNT_FAULTS, user.user_id, "account service unavailable")
    return jsonify(subscription={"userId": user.user_id, "userName": user.name, "type": "free"})


@bp.post("/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels")
def get_available_models() -> Response:
    """The fixed model list."""
    fail_on(MODELS_FAULTS, authenticated_user().user_id, "model service unavailable")
    return jsonify(availableModels=AVAILABLE_MODELS, defaultScenario=DEFAULT_SCENARIO)


@bp.post("/apiv2/kimi.chat.v1.ChatService/DeleteChat")
def delete_chat() -> Response:
    """Mark one of the user's chats deleted."""
    user = authenticated_user()
    body = json_body()
    chat_id = body.get("chat_id") or body.get("chatId")
    if not isinstance(chat_id, str):
        raise EmulatorError("invalid_argument", "chat_id is required")
    fail_on(DELETE_FAULTS, user.user_id, "chat service unavailable")
    current_state().delete_chat(user.user_id, chat_id)
    return jsonify({})


@bp.post("/apiv2/kimi.gateway.chat.v1.ChatService/Chat")
def chat() -> Response:
    """Start a turn and stream its answer as Connect frames."""
    state = current_state()
    user = authenticated_user()
    body = _chat_frame()
    reply_request = _reply_request(body)
    files = message_files(user.user_id, body.get("message"))
    chat_id, parent_id = _str_field(body, "chat_id"), _str_field(body.get("message"), "parent_id")
    state.check_turn(user.user_id, chat_id, parent_id)
    prompts, replies = state.transcript(chat_id, reply_request.prompt)
    reply_request = replace(reply_request, scripted=scripted_reply(prompts, replies))
    reply_request = with_files_read(reply_request, files)
    fault = state.take_fault(CHAT_FAULTS, user.user_id)
    if fault and fault.name in HTTP_FAULTS:
        return _http_fault_response(fault)
    if fault and fault.name == "limit_in_stream":
        message = "too many requests, try again in 3 hours"
        return _stream_response(error_stream("resource_exhausted", message), state.config())
    chat_name = chat_title(reply_request.prompt) or "New chat"
    turn = state.open_turn(user.user_id, chat_id, parent_id, reply_request.prompt, chat_name)
    plan = plan_reply(turn, reply_request, fault)
    state.set_reply_text(turn, reply_text(plan))
    response = _stream_response(plan, state.config(), lambda: state.close_turn(turn))
    # Also when the client leaves mid-stream, before the reply was over.
    response.call_on_close(lambda: state.close_turn(turn))
    return response


def _chat_frame() -> dict[str, Any]:
    """The request's one Connect frame, strictly checked."""
    if request.mimetype != CONNECT_JSON:
        raise EmulatorError("invalid_argument", f"content type must be {CONNECT_JSON}")
    try:
        frames = read_body(request.get_data())
    except FramingError as exc:
        raise EmulatorError("invalid_argument", f"invalid frame: {exc}") from exc
    if len(frames) != 1 or frames[0].flags != 0:
        raise EmulatorError("invalid_argument", "the body must be exactly one Connect frame")
    if not isinstance(frames[0].message, dict):
        raise EmulatorError("invalid_argument", "the frame must hold a JSON object")
    return frames[0].message


def _reply_request(body: dict[str, Any]) -> ReplyRequest:
    message = body.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    # File blocks may come before the text block.
    blocks = blocks if isinstance(blocks, list) else []
    texts = [block["text"] for block in blocks if isinstance(block, dict) and "text" in block]
    text = texts[0] if texts else None
    prompt = text.get("content") if isinstance(text, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise EmulatorError("invalid_argument", "a text block with content is required")
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
        return Response(GARBAGE_PAGE, status=200, content_type="text/html")
    return HTTP_FAULT_ERRORS[fault.name].to_response()


def _stream_response(
    plan: list[PlannedFrame],
    config: EmulatorConfig,
    on_reply_over: Callable[[], None] = nothing_to_do,
) -> Response:
    chunks = [
        OutgoingChunk(write_frame(frame.message, frame.flags), frame.pause, ends_reply(frame))
        for frame in plan
    ]
    body = write_chunks(chunks, config, on_reply_over)
    return Response(body, status=200, content_type=CONNECT_JSON)
