"""Failures inside a ``web`` answer stream: error frames and ``block.exception`` blocks.

Each is a fault (see faults.py) named for what it sends and where:

- ``error_end:KIND`` ends the stream with an error frame right after the assistant message
  opens; ``error_end:KIND:after_done`` sends an empty ``done`` first (Kimi was seen to);
  ``error_end:KIND:after_text`` sends a few words of the answer first.
- ``exception:KIND`` sets a ``block.exception`` before any answer text, and
  ``exception:KIND:after_text`` after a few words; a completed status, ``done`` and an empty
  end-of-stream frame follow, so a client must not take the turn for a normal stop.

Messages come as Kimi words them: a technical ``message`` and a ``localizedMessage`` for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR_PREFIX, EXCEPTION_PREFIX = "error_end", "exception"
AFTER_DONE, AFTER_TEXT = "after_done", "after_text"
# KIND -> (code, technical message, localized message)
ERROR_KINDS = {
    "unauthenticated": (
        "unauthenticated",
        "invalid claims: token expired",
        "登录已过期，请重新登录",
    ),
    "rate_limited": ("resource_exhausted", "rate limit exceeded", "请求过于频繁，请 3 小时后再试"),
    "chat_busy": (
        "resource_exhausted",
        "another answer is in progress in this chat",
        "当前会话正在生成回答，请稍后再试",
    ),
    "permission_denied": ("permission_denied", "chat belongs to another user", "无权访问该会话"),
    "not_found": ("not_found", "chat not found", "会话不存在"),
    "invalid_argument": ("invalid_argument", "message too long", "消息过长，请缩短后重试"),
    "unavailable": ("unavailable", "upstream connect error", "服务暂时不可用，请稍后再试"),
    "deadline_exceeded": ("deadline_exceeded", "generation timed out", "生成超时，请重试"),
    "unimplemented": ("unimplemented", "scenario not supported", "该功能暂不支持"),
    "unknown": ("data_loss", "unrecoverable data loss", "发生未知错误"),
}
# KIND -> (reason, severity, localized message)
EXCEPTION_KINDS = {
    "overload": (
        "REASON_COMPLETION_OVERLOADED",
        "SEVERITY_ERROR",
        "当前模型访问人数过多，请稍后再试",
    ),
    "moderation": (
        "REASON_CONTENT_SENSITIVE",
        "SEVERITY_BLOCK_RETRACT",
        "抱歉，这个问题我无法回答",
    ),
    "unknown": ("REASON_SOMETHING_NEW", "SEVERITY_ERROR", "回答出了点问题，请重试"),
}
ERROR_FAULTS = frozenset(
    f"{ERROR_PREFIX}:{kind}{suffix}"
    for kind in ERROR_KINDS
    for suffix in ("", f":{AFTER_DONE}", f":{AFTER_TEXT}")
)
EXCEPTION_FAULTS = frozenset(
    f"{EXCEPTION_PREFIX}:{kind}{suffix}"
    for kind in EXCEPTION_KINDS
    for suffix in ("", f":{AFTER_TEXT}")
)
FAILURE_FAULTS = ERROR_FAULTS | EXCEPTION_FAULTS


@dataclass(frozen=True)
class StreamFailure:
    """What one failure fault sends, and where in the stream."""

    message: dict[str, Any]  # the error frame's or the exception block's JSON
    is_error_frame: bool  # sent as the end-of-stream frame (else as a block.exception)
    after_done: bool
    after_text: bool


def stream_failure(name: str) -> StreamFailure:
    """The failure a fault name stands for (one of ``FAILURE_FAULTS``)."""
    prefix, kind, *placement = name.split(":")
    if prefix == ERROR_PREFIX:
        message = {"error": error_object(*ERROR_KINDS[kind])}
    else:
        message = exception_block(*EXCEPTION_KINDS[kind])
    return StreamFailure(
        message, prefix == ERROR_PREFIX, AFTER_DONE in placement, AFTER_TEXT in placement
    )


def error_object(code: str, message: str, localized: str) -> dict[str, Any]:
    """An error frame's ``error``, with the localized message in its debug details."""
    debug = {"reason": code.upper(), "localizedMessage": {"message": localized}}
    return {"code": code, "message": message, "details": [{"debug": debug}]}


def exception_block(reason: str, severity: str, localized: str) -> dict[str, Any]:
    """The state-sync operation that sets a ``block.exception``."""
    error = {"reason": reason, "localizedMessage": {"message": localized}, "severity": severity}
    return {
        "op": "set",
        "mask": "block.exception",
        "block": {"id": "b9", "exception": {"error": error}},
    }
