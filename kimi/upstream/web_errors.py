"""What an error frame of the ``web`` chat stream means for the client. Pure: no I/O.

A streaming Chat call answers HTTP 200; a failure arrives as the end-of-stream frame
``{"error": {"code", "message", "details": [{"debug": {"reason", "localizedMessage":
{"message"}}}]}}``. The code says what went wrong; the localized message (when there is one) is
what Kimi shows its own users, so it is the one passed on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import (
    BadRequest,
    ConversationBusy,
    KimiError,
    UpstreamError,
    UpstreamUnavailable,
)
from ..settings import COOLDOWN_SECONDS
from .http import MESSAGE_LIMIT, error_for

# ``resource_exhausted`` also says "another answer is still being written in this chat"; its
# message is the only way to tell that from a rate limit (English and Chinese wordings).
BUSY_MESSAGE_WORDS = ("in progress", "generating", "being generated", "正在", "进行中", "生成中")
KEPT_CHAT_CODES = frozenset({"not_found", "permission_denied"})


class StreamErrorSummary(NamedTuple):
    """An error frame as the service reports it: HTTP status, Kimi's code, Kimi's message."""

    status: int
    code: str
    message: str


def localized_message(error: Any) -> str:
    """Kimi's message for users when the error carries one, else its plain message."""
    if not isinstance(error, dict):
        return str(error or "").strip()
    for source in (error, *_debug_entries(error)):
        localized = source.get("localizedMessage")
        if isinstance(localized, dict) and localized.get("message"):
            return str(localized["message"]).strip()
    return str(error.get("message") or error.get("msg") or "").strip()


def error_code(error: Any) -> str:
    """The error's code, lower case (``resource_exhausted``); empty when it has none."""
    if not isinstance(error, dict):
        return ""
    return str(error.get("code") or error.get("error_type") or "").strip().lower()


def stream_error(
    error: Any, retry_after: float = COOLDOWN_SECONDS, *, kept_chat: bool = False
) -> KimiError:
    """The service's error for an error frame; ``kept_chat`` when the turn continued a chat."""
    code = error_code(error)
    message = (localized_message(error) or "no message")[:MESSAGE_LIMIT]
    if code == "resource_exhausted" and _says_busy(error, message):
        return ConversationBusy(f"Kimi is still answering in this conversation: {message}")
    if code in KEPT_CHAT_CODES and not kept_chat:
        # No conversation was named, so there is none to be "not found": Kimi refused the turn.
        return UpstreamError(f"Kimi refused the turn ({code}): {message}", code=f"kimi_{code}")
    if code == "invalid_argument":
        return BadRequest(f"Kimi refused the request: {message}", code="kimi_invalid_argument")
    if code == "unavailable":
        return UpstreamUnavailable(f"Kimi is unavailable: {message}")
    if code == "unimplemented":
        return UpstreamError(f"Kimi does not support this: {message}", code="kimi_unimplemented")
    return error_for(None, code, message, retry_after)


def describe_stream_error(error: Any, *, kept_chat: bool = False) -> StreamErrorSummary:
    """``(status, code, message)`` for an error frame, e.g. for a diagnostic report."""
    mapped = stream_error(error, kept_chat=kept_chat)
    return StreamErrorSummary(mapped.status, error_code(error), localized_message(error))


def _debug_entries(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d["debug"] for d in details if isinstance(d, dict) and isinstance(d.get("debug"), dict)]


def _says_busy(error: Any, message: str) -> bool:
    plain = error.get("message") or error.get("msg") or "" if isinstance(error, dict) else ""
    lowered = f"{plain} {message}".lower()
    return any(word in lowered for word in BUSY_MESSAGE_WORDS)
