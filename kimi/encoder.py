"""Writing a turn's events in OpenAI's shapes: stream chunks, or one folded completion.

Both read the same events through ``Reply``; the non-stream answer is the stream aggregated
(``Reply.collect``) and then encoded once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .chat_request import ChatRequest
from .errors import KimiError, UpstreamCut
from .events import ContentEvent, Finish, ReasoningDelta, TextDelta
from .keepalive import KEEPALIVE
from .usage import usage

log = logging.getLogger(__name__)

KEEPALIVE_LINE = b": keep-alive\n\n"
DONE_LINE = b"data: [DONE]\n\n"


@dataclass
class Reply:
    """The answer so far, folded from events."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, event: ContentEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, Finish):
            self.finish_reason = event.reason

    def usage(self, prompt: str) -> dict[str, int]:
        return usage(prompt, "".join(self.reasoning) + "".join(self.text))

    @classmethod
    def collect(cls, events: Iterable[ContentEvent]) -> Reply:
        """The whole answer: the stream's events aggregated. Errors propagate as raised."""
        reply = cls()
        for event in events:
            reply.add(event)
        if reply.finish_reason is None:
            raise UpstreamCut()
        return reply


class CompletionEncoder:
    """OpenAI encoding for one turn; ``completion_id`` stays the same in every chunk."""

    def __init__(self, request: ChatRequest, completion_id: str | None = None) -> None:
        self.request = request
        self.completion_id = completion_id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, reply: Reply) -> dict[str, Any]:
        """The non-stream ``chat.completion`` object for a collected answer."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.text)}
        if reply.reasoning:
            message["reasoning_content"] = "".join(reply.reasoning)
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": reply.usage(self.request.prompt),
        }

    def stream(self, events: Iterable[Any]) -> Iterator[bytes]:
        """Server-sent events: role chunk, deltas, finish chunk, usage chunk, ``[DONE]``.

        After the first byte an error can only be told in-stream: an ``error`` object, and no
        ``[DONE]``, so that no client mistakes a broken answer for a finished one.
        """
        reply = Reply()
        yield self._chunk({"role": "assistant", "content": ""})
        try:
            for event in events:
                if event is KEEPALIVE:
                    yield KEEPALIVE_LINE
                    continue
                reply.add(event)
                if isinstance(event, Finish):
                    yield from self._ending(reply)
                    return
                yield self._chunk(_delta(event))
            raise UpstreamCut()
        except KimiError as exc:
            log.warning("Stream %s failed after it started: %s", self.completion_id, exc.message)
            yield _sse(exc.to_body())

    def _ending(self, reply: Reply) -> Iterator[bytes]:
        yield self._chunk({}, reply.finish_reason)
        if self.request.include_usage:
            yield _sse(self._envelope([], usage=reply.usage(self.request.prompt)))
        yield DONE_LINE

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse(self._envelope([choice]))

    def _envelope(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }
        if self.request.include_usage:
            chunk["usage"] = extra.get("usage")
        return chunk


def _delta(event: ContentEvent) -> dict[str, str]:
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text}
    return {"content": event.text}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"
