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
from .events import FINISH_TOOL_CALLS, ContentEvent, Finish, ReasoningDelta, TextDelta, ToolCall
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
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, event: ContentEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ToolCall):
            self.tool_calls.append(event)
        elif isinstance(event, Finish):
            self.finish_reason = event.reason

    def usage(self, prompt: str) -> dict[str, Any]:
        calls = "".join(call.name + call.arguments for call in self.tool_calls)
        return usage(prompt, "".join(self.text) + calls, "".join(self.reasoning))

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
        text = "".join(reply.text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not reply.tool_calls else None,
        }
        if reply.reasoning:
            message["reasoning_content"] = "".join(reply.reasoning)
        if reply.tool_calls and self._legacy_functions:
            message["function_call"] = _function(reply.tool_calls[0])
        elif reply.tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in reply.tool_calls]
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
                    "finish_reason": self._finish_reason(reply.finish_reason),
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
                if isinstance(event, ToolCall):
                    yield from self._call_chunks(event)
                    continue
                yield self._chunk(_delta(event))
            raise UpstreamCut()
        except KimiError as exc:
            log.warning("Stream %s failed after it started: %s", self.completion_id, exc.message)
            yield _sse(exc.to_body())

    @property
    def _legacy_functions(self) -> bool:
        """The client used ``functions``: it reads one ``function_call``, not ``tool_calls``."""
        return self.request.tools is not None and self.request.tools.legacy

    def _finish_reason(self, reason: str | None) -> str | None:
        if reason == FINISH_TOOL_CALLS and self._legacy_functions:
            return "function_call"
        return reason

    def _call_chunks(self, call: ToolCall) -> Iterator[bytes]:
        """A call as OpenAI streams one: id and name first, then the arguments."""
        if self._legacy_functions:
            yield self._chunk({"function_call": {"name": call.name, "arguments": ""}})
            yield self._chunk({"function_call": {"arguments": call.arguments}})
            return
        head = _tool_call(call)
        head["function"]["arguments"] = ""
        yield self._chunk({"tool_calls": [head]})
        arguments = {"index": call.index, "function": {"arguments": call.arguments}}
        yield self._chunk({"tool_calls": [arguments]})

    def _ending(self, reply: Reply) -> Iterator[bytes]:
        yield self._chunk({}, self._finish_reason(reply.finish_reason))
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


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "index": call.index,
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _function(call: ToolCall) -> dict[str, str]:
    return {"name": call.name, "arguments": call.arguments}


def _delta(event: ContentEvent) -> dict[str, str]:
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text}
    return {"content": event.text}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"
