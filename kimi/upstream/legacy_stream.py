"""Mapping the ``legacy`` protocol's SSE events to internal events. Pure: no I/O.

One parser lives for a whole turn, across the completion call and any ``continue`` calls that
follow a ``length`` event, so the client sees one answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import ConversationBusy, RateLimited, UpstreamAuthRejected
from ..events import (
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    FINISH_STOP,
    Citation,
    Event,
    Finish,
    ReplyStarted,
    TextDelta,
)
from ..settings import COOLDOWN_SECONDS
from .http import error_from_body

IGNORED_EVENTS = frozenset({"ping", "debug", "rename", "search_plus_start", "loading"})
# In-stream errors that mean "try again" rather than "the answer was stopped".
RETRYABLE_ERRORS = (RateLimited, UpstreamAuthRejected, ConversationBusy)


class LegacyStreamParser:
    """Feed the JSON of each ``data:`` line; call ``end_call()`` when a call's stream ends."""

    def __init__(self, retry_after: float = COOLDOWN_SECONDS) -> None:
        self.segment_id: str | None = None  # the request's segment: what ``continue`` names
        self.hit_length = False
        self._retry_after = retry_after
        self._reply_id: str | None = None
        self._call_done = False
        self._stopped = False

    def feed(self, data: Any) -> Iterator[Event]:
        if not isinstance(data, dict):
            return
        kind = data.get("event")
        if kind == "req" and self.segment_id is None and data.get("id"):
            self.segment_id = str(data["id"])
        elif kind == "resp" and self._reply_id is None and data.get("id"):
            self._reply_id = str(data["id"])
            yield ReplyStarted(self._reply_id)
        elif kind == "cmpl" and isinstance(data.get("text"), str) and data["text"]:
            yield TextDelta(data["text"])
        elif kind == "search_plus":
            yield from _citation(data.get("msg"))
        elif kind == "length":
            self.hit_length = True
        elif kind == "error":
            self._error(data.get("error"))
        elif kind in ("done", "all_done"):
            self._call_done = True

    def start_continuation(self) -> None:
        """A ``continue`` call is about to stream the rest of the answer."""
        self.hit_length = False
        self._call_done = False

    @property
    def call_complete(self) -> bool:
        """The current call's stream reached ``done`` (or was stopped by an ``error``)."""
        return self._call_done or self._stopped

    @property
    def needs_continuation(self) -> bool:
        return self.hit_length and not self._stopped and self.segment_id is not None

    def finish(self) -> Finish:
        if self._stopped:
            return Finish(FINISH_CONTENT_FILTER)
        return Finish(FINISH_LENGTH if self.hit_length else FINISH_STOP)

    def _error(self, error: Any) -> None:
        exc = error_from_body(error, self._retry_after)
        if isinstance(exc, RETRYABLE_ERRORS):
            raise exc
        # Anything else stopped the answer (most often moderation): keep what came before.
        self._stopped = True


def _citation(msg: Any) -> Iterator[Event]:
    if isinstance(msg, dict) and msg.get("type") == "get_res" and msg.get("url"):
        yield Citation(title=str(msg.get("title") or ""), url=str(msg["url"]))
