"""Mapping the ``web`` protocol's state-sync frames to internal events. Pure: no I/O."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..errors import KimiError
from ..events import (
    FINISH_CONTENT_FILTER,
    FINISH_STOP,
    ChatOpened,
    Citation,
    Event,
    Finish,
    ReasoningDelta,
    ReplyStarted,
    TextDelta,
)
from ..settings import COOLDOWN_SECONDS
from .base import TurnTarget
from .connect import Frame
from .web_errors import mentions_moderation, read_exception, stream_error
from .web_sources import ReferenceRenderer, SearchSources

log = logging.getLogger(__name__)

STATUS_COMPLETED = "MESSAGE_STATUS_COMPLETED"
PARAGRAPH = "\n\n"


class WebStreamParser:
    """Feed decoded Connect frames in order; get internal events back.

    Call ``close()`` at the end of the byte stream: it yields the ``Finish`` when the turn
    reached a proper end (completed status, ``done`` or the end-of-stream flag), and leaves
    ``finished`` false when the stream was cut. A ``block.exception`` ends the answer: a
    moderated one finishes as ``content_filter``, any other raises from ``close()``.
    """

    def __init__(
        self,
        retry_after: float = COOLDOWN_SECONDS,
        *,
        kept_chat: bool = False,
        numbered_sources: bool = True,
    ) -> None:
        self.finished = False
        self._retry_after = retry_after
        self._kept_chat = kept_chat  # a continued chat: "not found" means the client's id
        self._sources = SearchSources()
        # Without a source list (a "silent" model) references to it are dropped.
        self._references = ReferenceRenderer(self._sources, numbered=numbered_sources)
        self._reply_id: str | None = None
        self._finish_reason: str | None = None
        self._last_block: dict[str, str] = {}  # kind -> id of the block that last wrote it
        self._finish_sent = False
        self._done = False
        self._stopped = False  # a block.exception ended the answer: later operations are not it
        self._failure: KimiError | None = None  # raised at close, unless an error frame came
        self.retracted = False  # Kimi withdrew the text sent so far (see README)

    @classmethod
    def for_turn(cls, target: TurnTarget, retry_after: float = COOLDOWN_SECONDS) -> WebStreamParser:
        """A parser for the answer to ``target``."""
        return cls(
            retry_after,
            kept_chat=bool(target.chat_id),
            numbered_sources=not target.options.silent,
        )

    def feed(self, frame: Frame) -> Iterator[Event]:
        """The events of one frame. An error frame raises, even after ``done``: the stream is
        read to its end before the turn counts as finished (see ``close``)."""
        message = frame.message if isinstance(frame.message, dict) else {}
        if "error" in message and message["error"]:
            raise stream_error(message["error"], self._retry_after, kept_chat=self._kept_chat)
        if "chat" in message and isinstance(message["chat"], dict) and message["chat"].get("id"):
            yield ChatOpened(str(message["chat"]["id"]))
        if "op" in message:
            yield from self._operation(message)
        if "done" in message or frame.end_stream:
            self._done = True

    def close(self) -> Iterator[Event]:
        """The stream closed: it ended properly after ``done``, end-of-stream or completion.

        Finishing only here, not at ``done``, means the stream is read to its very end, so
        Kimi has closed the turn before the next one in the same chat is sent.
        """
        if self._failure is not None:
            raise self._failure
        if self._done or self._finish_reason is not None:
            yield from self._finish()

    def _operation(self, message: dict[str, Any]) -> Iterator[Event]:
        if self._stopped:
            return
        mask = str(message.get("mask", ""))
        block = message.get("block") if isinstance(message.get("block"), dict) else {}
        if mask == "block.exception" or isinstance(block.get("exception"), dict):
            self._exception(block.get("exception"))
        elif mask.startswith("block"):
            yield from self._block(block)
        elif mask.startswith("message"):
            yield from self._message(message.get("message") or {})

    def _message(self, msg: dict[str, Any]) -> Iterator[Event]:
        if isinstance(msg.get("refs"), dict):
            self._sources.add_refs(msg["refs"])
        if msg.get("role") == "assistant" and msg.get("id") and self._reply_id is None:
            self._reply_id = str(msg["id"])
            yield ReplyStarted(self._reply_id)
        # Only the assistant message's status ends the turn; the user's own message is
        # reported COMPLETED before the answer even starts.
        if self._reply_id is None or msg.get("id", self._reply_id) != self._reply_id:
            return
        status = str(msg.get("status") or "")
        if status == STATUS_COMPLETED:
            self._finish_reason = FINISH_STOP
        elif mentions_moderation(status):
            self._finish_reason = FINISH_CONTENT_FILTER

    def _exception(self, exception: Any) -> None:
        self._stopped = True
        stopped = read_exception(exception)
        if not stopped.moderated:
            self._failure = stopped.error()
            return
        self._finish_reason = FINISH_CONTENT_FILTER
        self.retracted = stopped.retracted
        log.info("Kimi refused the answer: %s (retracted: %s)", stopped.reason, stopped.retracted)

    def _block(self, block: dict[str, Any]) -> Iterator[Event]:
        block_id = str(block.get("id", ""))
        if isinstance(block.get("tool"), dict):
            self._sources.add_tool(block["tool"])
        if isinstance(block.get("think"), dict):
            yield from self._piece(block_id, "think", block["think"].get("content"))
        if isinstance(block.get("text"), dict):
            text = block["text"]
            kind = "think" if _flags(text) == "thinking" else "text"
            yield from self._piece(block_id, kind, text.get("content"))
        multi = block.get("multiStage")
        if isinstance(multi, dict):
            for stage in multi.get("stages") or []:
                if isinstance(stage, dict) and stage.get("name") == "STAGE_NAME_THINKING":
                    content = stage.get("content") or (stage.get("think") or {}).get("content")
                    yield from self._piece(f"{block_id}/stage", "think", content)

    def _piece(self, block_id: str, kind: str, content: Any) -> Iterator[Event]:
        if not isinstance(content, str) or not content:
            return
        previous = self._last_block.get(kind)
        if previous is not None and previous != block_id:
            content = PARAGRAPH + content  # a new block of the same kind: a new paragraph
        self._last_block[kind] = block_id
        if kind == "think":
            yield ReasoningDelta(content)
            return
        text = self._references.feed(content)
        if text:
            yield TextDelta(text)

    def _finish(self) -> Iterator[Event]:
        self.finished = True
        if self._finish_sent:
            return
        self._finish_sent = True
        tail = self._references.flush()
        if tail:
            yield TextDelta(tail)
        for source in self._sources.listed():
            yield Citation(source.title, source.url)
        yield Finish(self._finish_reason or FINISH_STOP)


def _flags(text: dict[str, Any]) -> str:
    flags = text.get("flags")
    if isinstance(flags, list):
        flags = flags[0] if flags else ""
    return str(flags or "").lower()
