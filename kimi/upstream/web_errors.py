"""What an error frame of the ``web`` chat stream means for the client. Pure: no I/O.

A streaming Chat call answers HTTP 200; a failure arrives as the end-of-stream frame
``{"error": {"code", "message", "details": [{"debug": {"reason", "localizedMessage":
{"message"}}}]}}``. The code says what went wrong; the localized message (when there is one) is
what Kimi shows its own users, so it is the one passed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import (
    BadRequest,
    ConversationBusy,
    KimiError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from ..settings import COOLDOWN_SECONDS
from .http import MESSAGE_LIMIT, error_for

# ``resource_exhausted`` also says "another answer is still being written in this chat"; its
# message is the only way to tell that from a rate limit (English and Chinese wordings).
BUSY_MESSAGE_WORDS = ("in progress", "generating", "being generated", "正在", "进行中", "生成中")
KEPT_CHAT_CODES = frozenset({"not_found", "permission_denied"})
# A block.exception's reason (or a final message status) naming one of these was a refusal or
# moderation: the answer ends as ``content_filter``. No public capture shows the exact words.
MODERATION_WORDS = (
    "SENSITIVE",
    "BLOCK",
    "RISK",
    "MODERAT",
    "REFUS",
    "FILTER",
    "VIOLAT",
    "REJECT",
    "CENSOR",
    "UNSAFE",
    "POLICY",
)
OVERLOAD_WORD = "OVERLOAD"  # REASON_COMPLETION_OVERLOADED
RETRACT_WORD = "RETRACT"  # SEVERITY_BLOCK_RETRACT: Kimi's own client withdraws the text shown


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
    """The service's error for an error frame; ``kept_chat`` when the turn continued a chat.
    Kimi's message is kept as its ``said``."""
    message = (localized_message(error) or "no message")[:MESSAGE_LIMIT]
    mapped = _stream_error(error, error_code(error), message, retry_after, kept_chat)
    mapped.said = message
    return mapped


def _stream_error(
    error: Any, code: str, message: str, retry_after: float, kept_chat: bool
) -> KimiError:
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


@dataclass(frozen=True)
class AnswerException:
    """A ``block.exception`` read: why Kimi stopped the answer, and what the client gets."""

    reason: str
    message: str
    retracted: bool  # the severity says the text shown so far is withdrawn

    @property
    def moderated(self) -> bool:
        """A refusal or moderation: the answer ends as ``content_filter``, not as an error."""
        return OVERLOAD_WORD not in self.reason and mentions_moderation(self.reason)

    def error(self) -> KimiError:
        """The error a failed (not moderated) answer ends with."""
        if OVERLOAD_WORD in self.reason:
            return UpstreamOverloaded(f"Kimi is overloaded: {self.message}")
        return UpstreamError(f"Kimi stopped the answer: {self.message}", code="kimi_exception")


def read_exception(exception: Any) -> AnswerException:
    """The ``exception`` of a ``block.exception``: ``{"error": {"reason", "severity",
    "localizedMessage": {"message"}}}`` (the fields straight in it are read as well)."""
    exception = exception if isinstance(exception, dict) else {}
    error = exception["error"] if isinstance(exception.get("error"), dict) else exception
    reason = str(error.get("reason") or "").upper()
    message = (localized_message(error) or reason or "no reason given")[:MESSAGE_LIMIT]
    retracted = RETRACT_WORD in str(error.get("severity") or "").upper()
    return AnswerException(reason, message, retracted)


def mentions_moderation(name: str) -> bool:
    """Whether a reason or status name says the answer was refused or moderated."""
    upper = name.upper()
    return any(word in upper for word in MODERATION_WORDS)


def _debug_entries(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d["debug"] for d in details if isinstance(d, dict) and isinstance(d.get("debug"), dict)]


def _says_busy(error: Any, message: str) -> bool:
    """Whether the technical or the localized message speaks of an answer still running."""
    plain = (error.get("message") or error.get("msg") or "") if isinstance(error, dict) else ""
    lowered = f"{plain} {message}".lower()
    return any(word in lowered for word in BUSY_MESSAGE_WORDS)
