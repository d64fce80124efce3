"""Why a step failed: the error the adapter raised, read together with what crossed the wire
(HTTP status, Kimi's error code and message), and a hint at the likely cause."""

from __future__ import annotations

from typing import Any

import requests

from ..errors import (
    ConversationBusy,
    KimiError,
    NotFound,
    RateLimited,
    ResearchQuotaExhausted,
    StateStoreUnavailable,
    UpstreamAuthRejected,
    UpstreamCut,
    UpstreamError,
    UpstreamTimeout,
)
from ..settings import Settings
from ..upstream.web_errors import localized_message
from .masking import Masker
from .report import FAILED, StepResult
from .wire import Exchange

MESSAGE_LIMIT = 200

HINT_PROTOCOL = (
    "protocol changed: Kimi answered in a shape this version does not read; run again with "
    "--capture FILE and attach the file to a bug report"
)
HINT_TOKEN = (
    "token expired, revoked or rotated elsewhere: a web refresh token works once, so if another "
    "copy of it was refreshed (another deployment, the browser, an earlier run with another state "
    "store) this one is dead; copy a fresh refresh_token from kimi.com"
)
HINT_ACCESS = (
    "Kimi refused the access token it had just issued: the account was logged out or banned, or "
    "the protocol changed"
)
HINT_RATE = "rate limited: this account used its quota for now; wait {wait} or add accounts"
HINT_RESEARCH = "only research mode is out for now; the account's other models still answer"
HINT_BUSY = "another answer is still being written in this chat; try again in a minute"
HINT_CHAT_GONE = "Kimi no longer knows the chat it had just opened"
HINT_TIMEOUT = (
    "Kimi did not answer within KIMI_CONNECT_TIMEOUT/KIMI_READ_TIMEOUT ({connect:g}/{read:g} s): a "
    "slow or filtered network, or Kimi is overloaded"
)
HINT_FILE_TIMEOUT = "Kimi did not finish reading the image within FILE_PARSE_TIMEOUT ({:g} s)"
HINT_CUT = (
    "the answer stream ended before its end: a proxy or the network cut it, or Kimi broke off"
)
HINT_UNREACHABLE = (
    "host unreachable: check DNS, firewall and proxy settings and KIMI_BASE_URL/KIMI_AUTH_URL; "
    "some hosting regions cannot reach Kimi at all"
)
HINT_TLS = "TLS failed: a proxy intercepting HTTPS, an outdated CA bundle, or a wrong clock"
HINT_SERVER = "Kimi's side failed; try again later (if it persists, Kimi may have changed)"
HINT_STORE = "the state store failed: check KIMI_STATE_PATH, KIMI_STATE_URL or REDIS_URL"
HINT_FILTER = (
    "Kimi stopped the answer: its content filter, or an error it reported inside the stream "
    "(see its code and message)"
)
HINT_FORBIDDEN = (
    "Kimi refused access (permission denied): the account may lack the permission, or a "
    "pre-signed upload URL was refused"
)
HINT_PARSE_FAILED = "Kimi could not read the doctor's tiny PNG: its file reading is failing"
HINT_OVERLOADED = "Kimi's model is overloaded right now; try again in a few minutes"
HINT_UNREAD_ERROR = (
    "Kimi's stream carried an error the service read past: this version does not know this "
    "error's shape (protocol changed); run again with --capture FILE and report it"
)
# Kimi codes that say our request no longer fits what Kimi expects.
REFUSED_SHAPE_CODES = frozenset({"invalid_argument", "validation.error", "unimplemented"})
REFUSED_SHAPE_STATUSES = frozenset({400, 405, 415, 422})
CHAT_STEPS = frozenset({"stream", "delete"})
# What an adapter raises when an answer's shape drifted under it (a bug the doctor reports).
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


class ProtocolChanged(UpstreamError):
    """Kimi answered, but not in a shape the service reads (found by the doctor's own checks)."""

    code = "protocol_changed"


class AnswerFiltered(UpstreamError):
    """The doctor's prompt was answered with ``finish_reason`` ``content_filter``."""

    code = "content_filter"


class UnreadStreamError(UpstreamError):
    """The adapter finished the turn, but the stream it read carried an error."""

    code = "unread_stream_error"


def diagnose(
    step: str, exc: BaseException, exchanges: list[Exchange], settings: Settings, masker: Masker
) -> StepResult:
    """The failed result of ``step`` for ``exc``, with what the step's last answer said."""
    exchange = exchanges[-1] if exchanges else None
    status = exchange.status if exchange else None
    code, message = kimi_error(exchange) if exchange else (None, None)
    detail = exc.message if isinstance(exc, KimiError) else f"{type(exc).__name__}: {exc}"
    return StepResult(
        name=step,
        status=FAILED,
        detail=masker.text(detail),
        http_status=status,
        error_code=code,
        error_message=masker.text(message) if message else None,
        hint=hint(step, exc, status, code, settings),
    )


def hint(
    step: str, exc: BaseException, status: int | None, code: str | None, settings: Settings
) -> str:
    """The likely cause, from the error's class first and the wire's facts second."""
    for kind, text in CLASS_HINTS:
        if isinstance(exc, kind):
            return text
    if isinstance(exc, UpstreamAuthRejected):
        return HINT_TOKEN if step == "refresh" else HINT_ACCESS
    if isinstance(exc, RateLimited):
        return _rate_hint(exc)
    if isinstance(exc, UpstreamTimeout):
        return _timeout_hint(exc, settings)
    if isinstance(exc, NotFound):
        return HINT_CHAT_GONE if step in CHAT_STEPS else f"the route was not found: {HINT_PROTOCOL}"
    return _wire_hint(exc, status, (code or "").lower())


def _wire_hint(exc: BaseException, status: int | None, code: str) -> str:
    own_code = getattr(exc, "code", None)
    if own_code == "upstream_unreachable":
        tls = isinstance(exc.__cause__, requests.exceptions.SSLError)
        return HINT_TLS if tls else HINT_UNREACHABLE
    if own_code in CODE_HINTS:
        return CODE_HINTS[own_code]
    if status == 403 or code == "permission_denied":
        return HINT_FORBIDDEN
    if code in REFUSED_SHAPE_CODES or status in REFUSED_SHAPE_STATUSES:
        return f"Kimi refused the request's shape: {HINT_PROTOCOL}"
    if (status or 0) >= 500 or code:
        return HINT_SERVER
    return HINT_PROTOCOL  # Kimi answered, without an error, something the adapter cannot read


def _rate_hint(exc: RateLimited) -> str:
    if isinstance(exc, ResearchQuotaExhausted):
        return HINT_RESEARCH
    return HINT_RATE.format(wait=f"{exc.retry_after} s")


def _timeout_hint(exc: UpstreamTimeout, settings: Settings) -> str:
    if exc.code == "file_parse_timeout":
        return HINT_FILE_TIMEOUT.format(settings.file_parse_timeout)
    return HINT_TIMEOUT.format(connect=settings.connect_timeout, read=settings.read_timeout)


# Errors whose class says it all.
CLASS_HINTS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ProtocolChanged, HINT_PROTOCOL),
    (UnreadStreamError, HINT_UNREAD_ERROR),
    (AnswerFiltered, HINT_FILTER),
    (ConversationBusy, HINT_BUSY),
    (UpstreamCut, HINT_CUT),
    (StateStoreUnavailable, HINT_STORE),
    (requests.exceptions.SSLError, HINT_TLS),
    (SHAPE_ERRORS, HINT_PROTOCOL),
)
# The service's own error codes (``KimiError.code``) that say enough by themselves.
CODE_HINTS = {"file_parse_failed": HINT_PARSE_FAILED, "upstream_overloaded": HINT_OVERLOADED}


def kimi_error(exchange: Exchange) -> tuple[str | None, str | None]:
    """Kimi's error code and message as the answer carried them: a failed answer's body, an
    error frame, an SSE ``error`` event or a ``block.exception``."""
    for message in reversed(exchange.messages()):
        error = error_object(message, failed=(exchange.status or 0) >= 400)
        if error is not None:
            return _code(error), _message(error)
    return None, None


def error_object(message: Any, failed: bool = False) -> dict[str, Any] | None:
    """The error one JSON message carries, if any (``failed``: the message is a failed answer's
    body, which may be the error object itself)."""
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("error"), dict) and message["error"]:
        return message["error"]
    block = message.get("block")
    if isinstance(block, dict) and isinstance(block.get("exception"), dict):
        exception = block["exception"]
        return exception.get("error") if isinstance(exception.get("error"), dict) else exception
    if failed and any(key in message for key in ("code", "error_type", "message", "msg")):
        return message
    return None


def _code(error: dict[str, Any]) -> str | None:
    code = error.get("code") or error.get("error_type") or error.get("reason")
    return str(code) if code else None


def _message(error: dict[str, Any]) -> str | None:
    """The plain message, and Kimi's message for users when it says something else."""
    plain = error.get("message") or error.get("msg")
    texts = [plain]
    localized = localized_message(error)  # falls back to the plain message when there is none
    if localized != str(plain or "").strip():
        texts.append(localized)
    joined = " / ".join(str(text) for text in texts if text)
    return joined[:MESSAGE_LIMIT] or None
