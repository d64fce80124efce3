"""The emulated 2024 Kimi backend (``legacy`` protocol): REST routes and Server-Sent Events.

Served next to the ``web`` routes (the paths do not collide) from the same state: the same
users and tokens, chats, faults and call log. Errors take the 2024 shape
``{"error_type", "message"}``, translated from the Connect code they are raised with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify

from .bodies import json_body
from .call_log import (
    authenticated_user,
    bearer_token,
    note_caller,
    record_call_arrival,
    record_call_status,
)
from .context import current_state, fail_on
from .errors import EmulatorError
from .faults import (
    ACCOUNT_FAULTS,
    DELETE_FAULTS,
    GARBAGE_PAGE,
    HTTP_FAULT_ERRORS,
    HTTP_FAULTS,
    LEGACY_CHAT_FAULTS,
    REFRESH_FAULTS,
    RESEARCH_FAULTS,
    Fault,
)
from .legacy_replies import (
    PlannedEvent,
    answer_parts,
    encode_event,
    ends_reply,
    error_events,
    plan_continuation,
    plan_turn,
    streamed_text,
)
from .replies import chat_title
from .scripts import scripted_reply
from .state import RESEARCH_TOTAL, EmulatorConfig, LegacyCall
from .streaming import OutgoingChunk, nothing_to_do, write_chunks
from .tokens import TokenError

log = logging.getLogger(__name__)

bp = Blueprint("kimi_emulator_legacy", __name__)
bp.before_request(record_call_arrival)
bp.after_request(record_call_status)

EVENT_STREAM = "text/event-stream"
NEW_CHAT_NAME = "未命名会话"
DEFAULT_AGENT = "kimi"
CONTINUE_ACTION = "continue"
RATE_LIMIT_MESSAGE = "too many requests, try again in 3 hours"


@dataclass(frozen=True)
class CompletionRequest:
    """What a completion call asks for; ``segment_id`` is set for a ``continue`` call, ``refs``
    are the ids of the files it refers to."""

    prompt: str
    search: bool = False
    segment_id: str | None = None
    refs: tuple[str, ...] = ()


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    return error.to_legacy_response()


@bp.get("/api/auth/token/refresh")
def refresh_access_token() -> Response:
    """A new token pair for a refresh token, which (unlike the web route) stays usable."""
    token = bearer_token("refresh")
    state = current_state()
    if state.take_fault(REFRESH_FAULTS, state.token_owner(token, "refresh")):
        raise EmulatorError("internal", "auth service unavailable")
    try:
        tokens = state.refresh(token, revoke=False)
    except TokenError as exc:
        raise EmulatorError("unauthenticated", str(exc)) from exc
    note_caller(tokens.user_id)
    return jsonify(access_token=tokens.access_token, refresh_token=tokens.refresh_token)


@bp.get("/api/user")
def show_user() -> Response:
    """The caller's account: clients send its id as ``X-Traffic-Id``."""
    user = authenticated_user()
    fail_on(ACCOUNT_FAULTS, user.user_id, "account service unavailable")
    return jsonify(id=user.user_id, name=user.name, phone="")


@bp.post("/api/chat")
def create_chat() -> Response:
    """Open an empty chat for later completion calls."""
    user = authenticated_user()
    body = json_body()
    name = _optional_str(body, "name", NEW_CHAT_NAME)
    agent = _optional_str(body, "kimiplus_id", DEFAULT_AGENT)
    chat_id = current_state().create_legacy_chat(user.user_id, name, agent)
    return jsonify(id=chat_id, name=name)


@bp.delete("/api/chat/<chat_id>")
def delete_chat(chat_id: str) -> Response:
    """Mark one of the caller's chats deleted."""
    user = authenticated_user()
    fail_on(DELETE_FAULTS, user.user_id, "chat service unavailable")
    current_state().delete_legacy_chat(user.user_id, chat_id)
    return jsonify({})


@bp.get("/api/chat/research/usage")
def research_usage() -> Response:
    """The research quota: full by default, used up by config or the next such fault."""
    user = authenticated_user()
    state = current_state()
    exhausted = state.take_fault(RESEARCH_FAULTS, user.user_id) is not None
    remain = 0 if exhausted else state.config().research_remain
    total = max(RESEARCH_TOTAL, remain)
    return jsonify(remain=remain, total=total, used=total - remain)


@bp.post("/api/chat/<chat_id>/completion/stream")
def stream_completion(chat_id: str) -> Response:
    """Answer a turn (or continue one) as a stream of ``data:`` events."""
    state = current_state()
    user = authenticated_user()
    completion = _completion_request(json_body())
    state.check_legacy_call(user.user_id, chat_id, completion.segment_id)
    file_names = state.ready_file_names(user.user_id, completion.refs)
    fault = state.take_fault(LEGACY_CHAT_FAULTS, user.user_id)
    if fault and fault.name in HTTP_FAULTS:
        return _http_fault_response(fault)
    if fault and fault.name == "limit_in_stream":
        return _event_stream(error_events("chat.rate_limit", RATE_LIMIT_MESSAGE), state.config())
    call, plan = _open_and_plan(user.user_id, chat_id, completion, fault, file_names)
    state.append_reply_text(call.turn, streamed_text(plan))
    response = _event_stream(plan, state.config(), lambda: state.close_turn(call.turn))
    # Also when the client leaves mid-stream, before the reply was over.
    response.call_on_close(lambda: state.close_turn(call.turn))
    return response


def _open_and_plan(
    user_id: str,
    chat_id: str,
    completion: CompletionRequest,
    fault: Fault | None,
    file_names: list[str],
) -> tuple[LegacyCall, list[PlannedEvent]]:
    state = current_state()
    if completion.segment_id is not None:
        call = state.open_legacy_continuation(user_id, chat_id, completion.segment_id)
        return call, plan_continuation(call.turn, call.pieces, call.more_to_come, fault)
    prompts, replies = state.transcript(chat_id, completion.prompt)
    scripted = scripted_reply(prompts, replies)
    parts = answer_parts(completion.prompt, fault, file_names, scripted)
    name = chat_title(completion.prompt) or NEW_CHAT_NAME
    call = state.open_legacy_turn(user_id, chat_id, completion.prompt, name, parts)
    plan = plan_turn(
        call.turn,
        completion.prompt,
        call.pieces,
        call.more_to_come,
        completion.search,
        fault,
        completion.refs,
    )
    return call, plan


def _completion_request(body: dict[str, Any]) -> CompletionRequest:
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    content = last.get("content") if isinstance(last, dict) else None
    if not isinstance(content, str):
        raise EmulatorError("invalid_argument", "messages[].content is required")
    search = body.get("use_search", False)
    if not isinstance(search, bool):
        raise EmulatorError("invalid_argument", "use_search must be a boolean")
    refs = _file_refs(body)
    if body.get("action") == CONTINUE_ACTION:
        segment_id = body.get("segment_id")
        if not isinstance(segment_id, str) or not segment_id:
            raise EmulatorError("invalid_argument", "segment_id is required to continue")
        return CompletionRequest(content, search, segment_id, refs)
    if not content.strip():
        raise EmulatorError("invalid_argument", "messages[].content must not be empty")
    return CompletionRequest(content, search, refs=refs)


def _file_refs(body: dict[str, Any]) -> tuple[str, ...]:
    """The file ids of ``refs`` and of the ``refs_file`` objects, in order, each once."""
    refs = body.get("refs") or []
    objects = body.get("refs_file") or []
    if not isinstance(refs, list) or not all(isinstance(ref, str) and ref for ref in refs):
        raise EmulatorError("invalid_argument", "refs must be a list of file ids")
    if not isinstance(objects, list) or not all(_is_file_object(item) for item in objects):
        raise EmulatorError("invalid_argument", "refs_file must be a list of files with an id")
    return tuple(dict.fromkeys([*refs, *(item["id"] for item in objects)]))


def _is_file_object(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("id"), str) and bool(item["id"])


def _optional_str(body: dict[str, Any], name: str, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise EmulatorError("invalid_argument", f"{name} must be a non-empty string")
    return value


def _http_fault_response(fault: Fault) -> Response:
    log.info("answering a completion call with the %s fault", fault.name)
    if fault.name == "garbage":
        return Response(GARBAGE_PAGE, status=200, content_type="text/html")
    return HTTP_FAULT_ERRORS[fault.name].to_legacy_response()


def _event_stream(
    plan: list[PlannedEvent],
    config: EmulatorConfig,
    on_reply_over: Callable[[], None] = nothing_to_do,
) -> Response:
    chunks = [
        OutgoingChunk(encode_event(event.data), event.pause, ends_reply(event)) for event in plan
    ]
    response = Response(write_chunks(chunks, config, on_reply_over), content_type=EVENT_STREAM)
    response.headers["Cache-Control"] = "no-cache"
    return response
