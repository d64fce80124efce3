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
from .events import (
    FINISH_TOOL_CALLS,
    ChatOpened,
    ContentEvent,
    Finish,
    HiddenReasoning,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from .keepalive import KEEPALIVE, KEEPALIVE_LINE
from .usage import usage

log = logging.getLogger(__name__)

DONE_LINE = b"data: [DONE]\n\n"
ROLE_DELTA = {"role": "assistant", "content": ""}
# A str as JSON, non-ASCII kept as UTF-8 (the C encoder json.dumps uses for one string).
encode_json_string = json.encoder.encode_basestring


@dataclass
class Reply:
    """The answer so far, folded from events."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    hidden_reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    chat_id: str | None = None  # the Kimi chat the answer came from

    def add(self, event: ContentEvent | ChatOpened) -> None:
        if isinstance(event, ChatOpened):
            self.chat_id = event.chat_id
        elif isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, HiddenReasoning):
            self.hidden_reasoning.append(event.text)
        elif isinstance(event, ToolCall):
            self.tool_calls.append(event)
        elif isinstance(event, Finish):
            self.finish_reason = event.reason

    def usage(self, prompt: str) -> dict[str, Any]:
        calls = "".join(call.name + call.arguments for call in self.tool_calls)
        thinking = "".join(self.reasoning) + "".join(self.hidden_reasoning)
        return usage(prompt, "".join(self.text) + calls, thinking)

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
    """OpenAI encoding for one turn; the id is the Kimi chat's, the same in every chunk."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.created = int(time.time())

    def completion_id(self, chat_id: str | None) -> str:
        """The chat's id (what a client sends back as ``conversation_id``), else a fresh one."""
        return chat_id or self.request.conversation_id or f"chatcmpl-{uuid.uuid4().hex}"

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
            "id": self.completion_id(reply.chat_id),
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

        The role chunk waits for the first content event, so that the chat's id, which comes
        before it (``ChatOpened``), is the id of every chunk. After the first byte an error can
        only be told in-stream: an ``error`` object, and no ``[DONE]``, so that no client
        mistakes a broken answer for a finished one.
        """
        reply = Reply()
        chunks: ChunkWriter | None = None
        try:
            for event in events:
                if event is KEEPALIVE:
                    yield KEEPALIVE_LINE
                    continue
                reply.add(event)
                if isinstance(event, (ChatOpened, HiddenReasoning)):
                    continue
                if chunks is None:
                    chunks = self._writer(reply.chat_id)
                    yield chunks.delta(ROLE_DELTA)
                if isinstance(event, TextDelta):
                    yield chunks.text("content", event.text)
                elif isinstance(event, ReasoningDelta):
                    yield chunks.text("reasoning_content", event.text)
                elif isinstance(event, ToolCall):
                    yield from self._call_chunks(chunks, event)
                elif isinstance(event, Finish):
                    yield from self._ending(chunks, reply)
                    return
            raise UpstreamCut()
        except KimiError as exc:
            log.warning("Stream failed after it started: %s", exc.message)
            yield _sse(exc.to_body())

    def _writer(self, chat_id: str | None) -> ChunkWriter:
        return ChunkWriter(
            {
                "id": self.completion_id(chat_id),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.request.model,
            },
            include_usage=self.request.include_usage,
        )

    @property
    def _legacy_functions(self) -> bool:
        """The client used ``functions``: it reads one ``function_call``, not ``tool_calls``."""
        return self.request.tools is not None and self.request.tools.legacy

    def _finish_reason(self, reason: str | None) -> str | None:
        if reason == FINISH_TOOL_CALLS and self._legacy_functions:
            return "function_call"
        return reason

    def _call_chunks(self, chunks: ChunkWriter, call: ToolCall) -> Iterator[bytes]:
        """A call as OpenAI streams one: id and name first, then the arguments."""
        if self._legacy_functions:
            yield chunks.delta({"function_call": {"name": call.name, "arguments": ""}})
            yield chunks.delta({"function_call": {"arguments": call.arguments}})
            return
        head = _tool_call(call)
        head["function"]["arguments"] = ""
        yield chunks.delta({"tool_calls": [head]})
        arguments = {"index": call.index, "function": {"arguments": call.arguments}}
        yield chunks.delta({"tool_calls": [arguments]})

    def _ending(self, chunks: ChunkWriter, reply: Reply) -> Iterator[bytes]:
        yield chunks.delta({}, self._finish_reason(reply.finish_reason))
        if self.request.include_usage:
            yield chunks.usage(reply.usage(self.request.prompt))
        yield DONE_LINE


class ChunkWriter:
    """The bytes of one stream's chunks: the constant envelope (id, created, model) is encoded
    once, and each delta is spliced into it; the hot path of a relayed event."""

    def __init__(self, envelope: dict[str, Any], *, include_usage: bool) -> None:
        self._envelope = envelope
        self._include_usage = include_usage
        head = json.dumps(envelope, ensure_ascii=False)[:-1]  # without the closing brace
        self._head = f'data: {head}, "choices": [{{"index": 0, "delta": '.encode()
        usage = ', "usage": null' if include_usage else ""
        self._tails = {
            None: f', "logprobs": null, "finish_reason": null}}]{usage}}}\n\n'.encode(),
        }
        self._usage = usage

    def text(self, field_name: str, text: str) -> bytes:
        """A delta of one text field: only the text itself is encoded per event."""
        value = encode_json_string(text).encode("utf-8")
        return b"".join(
            (self._head, b'{"', field_name.encode(), b'": ', value, b"}", self._tails[None])
        )

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if finish_reason not in self._tails:
            reason = json.dumps(finish_reason)
            tail = f', "logprobs": null, "finish_reason": {reason}}}]{self._usage}}}\n\n'
            self._tails[finish_reason] = tail.encode()
        body = json.dumps(delta, ensure_ascii=False).encode("utf-8")
        return self._head + body + self._tails[finish_reason]

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The last chunk of ``include_usage``: no choices, the usage object."""
        return _sse({**self._envelope, "choices": [], "usage": usage})


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "index": call.index,
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _function(call: ToolCall) -> dict[str, str]:
    return {"name": call.name, "arguments": call.arguments}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"
