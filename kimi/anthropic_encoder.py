"""Writing a turn's events in Anthropic's Messages shapes: one message, or its event stream.

The stream opens a content block per run of thinking, of text, and per tool call, and closes
it before the next one starts, as Anthropic's API does; the non-stream message is the same
events folded. Errors use Anthropic's ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .anthropic_request import MessagesRequest
from .encoder import Reply
from .errors import KimiError, UpstreamCut
from .events import (
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOOL_CALLS,
    ChatOpened,
    Finish,
    HiddenReasoning,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from .keepalive import KEEPALIVE
from .tools import call_reminder
from .usage import estimate_tokens

log = logging.getLogger(__name__)

STOP_REASONS = {
    FINISH_STOP: "end_turn",
    FINISH_LENGTH: "max_tokens",
    FINISH_TOOL_CALLS: "tool_use",
    FINISH_CONTENT_FILTER: "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
OPENAI_CALL_PREFIX = "call_"
TOOL_USE_PREFIX = "toolu_"


@dataclass
class Answer:
    """A whole answer: the folded events, and the stop string that ended it, if one did."""

    reply: Reply
    stop_sequence: str | None = None

    @classmethod
    def collect(cls, turn: Any, request: MessagesRequest) -> Answer:
        """Fold the turn; an answer without the call ``tool_choice`` requires is asked for
        once more, in the same Kimi chat, as the chat completions route does."""
        answer = cls._fold(turn)
        tools = request.chat.tools
        reply = answer.reply
        if tools and tools.call_required and not reply.tool_calls and reply.finish_reason == "stop":
            log.info("Asking Kimi once for the tool call that tool_choice requires")
            return cls._fold(turn.follow_up(call_reminder(tools)))
        return answer

    @classmethod
    def _fold(cls, events: Iterable[Any]) -> Answer:
        finishes: list[Finish] = []

        def watched() -> Iterator[Any]:
            for event in events:
                if isinstance(event, Finish):
                    finishes.append(event)
                yield event

        reply = Reply.collect(watched())
        return cls(reply, finishes[-1].stop_sequence if finishes else None)


class MessageEncoder:
    """Anthropic encoding for one turn: the message id is the same everywhere it appears."""

    def __init__(self, request: MessagesRequest) -> None:
        self.request = request
        self.message_id = f"msg_{uuid.uuid4().hex}"

    @property
    def input_tokens(self) -> int:
        return estimate_tokens(self.request.chat.prompt)

    def message(self, answer: Answer) -> dict[str, Any]:
        """The non-stream ``message`` object."""
        reply = answer.reply
        content: list[dict[str, Any]] = []
        thinking = "".join(reply.reasoning)
        if thinking:
            content.append({"type": "thinking", "thinking": thinking, "signature": sign(thinking)})
        text = "".join(reply.text)
        if text:
            content.append({"type": "text", "text": text})
        content += [_tool_use(call, call.arguments) for call in reply.tool_calls]
        reason, sequence = _stop(reply.finish_reason, answer.stop_sequence)
        return self._envelope(content, reason, sequence, output_tokens(reply))

    def stream(self, events: Iterable[Any]) -> Iterator[bytes]:
        """Server-sent events, ``message_start`` to ``message_stop``; ``ping`` during silence.

        After the first byte an error can only be told in-stream: an ``error`` event, and no
        ``message_stop``, so that no client mistakes a broken answer for a finished one.
        """
        blocks = _BlockWriter()
        reply = Reply()
        started = False
        try:
            for event in events:
                if event is KEEPALIVE:
                    yield PING
                    continue
                reply.add(event)
                if isinstance(event, (ChatOpened, HiddenReasoning)):
                    continue
                if not started:
                    started = True
                    yield sse("message_start", self._start())
                if isinstance(event, Finish):
                    yield from blocks.close()
                    yield from self._ending(reply, event)
                    return
                yield from blocks.write(event)
            raise UpstreamCut()
        except KimiError as exc:
            log.warning("Stream failed after it started: %s", exc.message)
            yield sse("error", error_body(exc.status, exc.message))

    def _start(self) -> dict[str, Any]:
        message = self._envelope([], None, None, 0)
        return {"type": "message_start", "message": message}

    def _ending(self, reply: Reply, finish: Finish) -> Iterator[bytes]:
        reason, sequence = _stop(finish.reason, finish.stop_sequence)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        usage = {"output_tokens": output_tokens(reply)}
        yield sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        yield sse("message_stop", {"type": "message_stop"})

    def _envelope(
        self, content: list, reason: str | None, sequence: str | None, output: int
    ) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": output},
        }


class _BlockWriter:
    """The content blocks of a stream: consecutive deltas of one kind share a block."""

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None  # the open block's type
        self.thinking: list[str] = []

    def write(self, event: Any) -> Iterator[bytes]:
        if isinstance(event, ReasoningDelta) and event.text:
            yield from self._open({"type": "thinking", "thinking": "", "signature": ""})
            self.thinking.append(event.text)
            yield self._delta({"type": "thinking_delta", "thinking": event.text})
        elif isinstance(event, TextDelta) and event.text:
            yield from self._open({"type": "text", "text": ""})
            yield self._delta({"type": "text_delta", "text": event.text})
        elif isinstance(event, ToolCall):
            yield from self.close()
            yield from self._open(_tool_use(event, arguments="{}"))
            yield self._delta({"type": "input_json_delta", "partial_json": event.arguments})
            yield from self.close()

    def close(self) -> Iterator[bytes]:
        if self.kind is None:
            return
        if self.kind == "thinking":
            signature = sign("".join(self.thinking))
            yield self._delta({"type": "signature_delta", "signature": signature})
            self.thinking.clear()
        self.kind = None
        yield sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, block: dict[str, Any]) -> Iterator[bytes]:
        """Start ``block`` unless a block of its type is the open one."""
        if self.kind == block["type"]:
            return
        yield from self.close()
        self.index += 1
        self.kind = block["type"]
        payload = {"type": "content_block_start", "index": self.index, "content_block": block}
        yield sse("content_block_start", payload)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self.index, "delta": delta}
        return sse("content_block_delta", payload)


def _tool_use(call: ToolCall, arguments: str) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_use_id(call.call_id),
        "name": call.name,
        "input": json.loads(arguments or "{}"),
    }


def tool_use_id(call_id: str) -> str:
    """Anthropic's ``toolu_`` form of a call id (the same random part)."""
    suffix = (
        call_id[len(OPENAI_CALL_PREFIX) :] if call_id.startswith(OPENAI_CALL_PREFIX) else call_id
    )
    return TOOL_USE_PREFIX + suffix


def sign(thinking: str) -> str:
    """The ``signature`` of a thinking block. Anthropic's is a proof clients send back; Kimi's
    thinking has none, so this is a digest of the text, never checked when it comes back."""
    return base64.b64encode(hashlib.sha256(thinking.encode("utf-8")).digest()).decode("ascii")


def output_tokens(reply: Reply) -> int:
    """The answer's tokens, thinking and calls included (the estimate ``usage`` uses)."""
    return reply.usage("")["completion_tokens"]


def _stop(finish_reason: str | None, stop_sequence: str | None) -> tuple[str, str | None]:
    if finish_reason == FINISH_STOP and stop_sequence:
        return "stop_sequence", stop_sequence
    return STOP_REASONS.get(finish_reason or FINISH_STOP, "end_turn"), None


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object for an error answered with HTTP ``status``."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def sse(event: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False)
    return f"event: {event}\ndata: {data}\n\n".encode()


PING = sse("ping", {"type": "ping"})  # Anthropic's keep-alive
