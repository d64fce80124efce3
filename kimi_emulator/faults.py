"""Failures the emulator can be told to produce, consumed by the next matching call."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EmulatorError
from .stream_failures import FAILURE_FAULTS

# Faults answered before any stream starts, as an HTTP error or a non-Connect body.
HTTP_FAULTS = frozenset({"unauthorized", "limit", "server_error", "garbage", "busy"})
# What each HTTP fault answers, in either protocol's error shape (``garbage`` is an HTML page).
HTTP_FAULT_ERRORS = {
    "unauthorized": EmulatorError("unauthenticated", "invalid claims: token is not active"),
    "limit": EmulatorError("resource_exhausted", "too many requests, try again in 3 hours"),
    "server_error": EmulatorError("internal", "internal server error"),
    "busy": EmulatorError("aborted", "a reply is still being generated in this chat"),
}
GARBAGE_PAGE = "<html>gateway error</html>"
# Faults that shape the answer stream itself (and the web stream's error frames and exception
# blocks, see stream_failures.py).
STREAM_FAULTS = FAILURE_FAULTS | {
    "limit_in_stream",
    "cut",
    "stream_error",
    "moderation",
    "silence",
    "degrade",
    "slow",
}
# The Chat call of the ``web`` protocol meets these.
CHAT_FAULTS = HTTP_FAULTS | STREAM_FAULTS
# Only the ``legacy`` protocol stops an answer at a length limit, to be continued by the client:
# ``length`` once, ``length_twice`` in the continuation as well.
LENGTH_FAULTS = frozenset({"length", "length_twice"})
# The legacy completion call meets these; a model degrade notice has no legacy equivalent.
LEGACY_CHAT_FAULTS = (CHAT_FAULTS - {"degrade"} - FAILURE_FAULTS) | LENGTH_FAULTS
REFRESH_FAULTS = frozenset({"refresh_down"})
# The legacy research quota reads as used up.
RESEARCH_FAULTS = frozenset({"research_exhausted"})
# The legacy file flow: a pre-sign call fails, a PUT is refused, a registered file never
# becomes ready (the fault sticks to the next file registered).
PRESIGN_FAULTS = frozenset({"presign_error"})
UPLOAD_FAULTS = frozenset({"upload_forbidden"})
PARSE_FAULTS = frozenset({"parse_never"})
FILE_FAULTS = PRESIGN_FAULTS | UPLOAD_FAULTS | PARSE_FAULTS
# The web file flow: the next uploaded file's parse fails, or takes the fault's ``seconds``.
WEB_PARSE_FAULTS = frozenset({"parse_failed", "parse_slow"})
# The web upload call itself is refused: the access token expired between the refresh and the
# upload (401), or the account is rate-limited (429).
WEB_UPLOAD_FAULTS = frozenset({"upload_unauthorized", "upload_limit"})
WEB_UPLOAD_FAULT_ERRORS = {
    "upload_unauthorized": HTTP_FAULT_ERRORS["unauthorized"],
    "upload_limit": HTTP_FAULT_ERRORS["limit"],
}
# One route of either protocol answers a 500: the account (GetSubscription, /api/user), the
# model list (web), deleting a chat.
ACCOUNT_FAULTS = frozenset({"account_down"})
MODELS_FAULTS = frozenset({"models_down"})
DELETE_FAULTS = frozenset({"delete_error"})
ROUTE_FAULTS = ACCOUNT_FAULTS | MODELS_FAULTS | DELETE_FAULTS
FAULT_NAMES = (
    CHAT_FAULTS
    | LEGACY_CHAT_FAULTS
    | REFRESH_FAULTS
    | RESEARCH_FAULTS
    | FILE_FAULTS
    | ROUTE_FAULTS
    | WEB_PARSE_FAULTS
    | WEB_UPLOAD_FAULTS
)
DEFAULT_FAULT_SECONDS = 1.0


@dataclass
class Fault:
    """A queued failure: ``times`` more calls (of ``user_id``'s, or anyone's) will meet it."""

    name: str
    times: int = 1
    user_id: str | None = None
    seconds: float = DEFAULT_FAULT_SECONDS

    def __post_init__(self) -> None:
        if self.name not in FAULT_NAMES:
            known = ", ".join(sorted(FAULT_NAMES))
            raise ValueError(f"unknown fault {self.name!r}; known: {known}")
        if self.times < 1:
            raise ValueError("times must be at least 1")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")

    def matches(self, names: frozenset[str], user_id: str | None) -> bool:
        """Whether a call of one of ``names``' kind by ``user_id`` meets this fault."""
        return self.name in names and (self.user_id is None or self.user_id == user_id)
