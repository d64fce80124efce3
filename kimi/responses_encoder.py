"""Writing a turn's events in the Responses API's shapes: one ``response``, or its event stream.

The output is a list of items: a ``reasoning`` item (its summary is Kimi's thinking), a
``message`` with one ``output_text`` part, and a ``function_call`` per call. The stream opens
and closes each item with typed events numbered from 0 (``sequence_number``); the non-stream
response is the same items built from the folded answer. After the stream's start an error is
``response.failed`` carrying it, never a silent end.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .encoder import Reply
from .errors import KimiError, RateLimited, UpstreamCut
from .events import (
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    ChatOpened,
    Finish,
    HiddenReasoning,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from .keepalive import KEEPALIVE, KEEPALIVE_LINE
from .responses_request import ResponsesRequest

log = logging.getLogger(__name__)

COMPLETED, INCOMPLETE, IN_PROGRESS, FAILED = "completed", "incomplete", "in_progress", "failed"
# Why an answer is incomplete, by the finish reason that ended it.
INCOMPLETE_REASONS = {FINISH_LENGTH: "max_output_tokens", FINISH_CONTENT_FILTER: "content_filter"}
# The codes a failed response's error may carry (ResponseError.code in the SDK).
SERVER_ERROR, RATE_LIMIT = "server_error", "rate_limit_exceeded"

# Called with the finished response (completed or incomplete) and the Kimi chat it came from.
OnDone = Callable[[dict[str, Any], str | None], None]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseEncoder:
    """Responses encoding for one turn: the response id is the same everywhere it appears."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.response_id = new_id("resp")
        self.created_at = int(time.time())

    def response(self, reply: Reply) -> dict[str, Any]:
        """The non-stream ``response`` object for a collected answer."""
        status = _status(reply.finish_reason)
        output = []
        if reply.reasoning:
            output.append(reasoning_item(new_id("rs"), "".join(reply.reasoning)))
        if reply.text or not reply.tool_calls:
            output.append(message_item(new_id("msg"), "".join(reply.text), status))
        output += [function_call_item(new_id("fc"), call, COMPLETED) for call in reply.tool_calls]
        return self.envelope(status, output, reply)

    def envelope(
        self, status: str, output: list[dict[str, Any]], reply: Reply | None = None
    ) -> dict[str, Any]:
        """The ``response`` object: what was asked (echoed), the output so far, the usage."""
        reason = INCOMPLETE_REASONS.get(reply.finish_reason or "") if reply else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if status == COMPLETED else None,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": reason} if status == INCOMPLETE else None,
            "model": self.request.model,
            "output": output,
            "previous_response_id": self.request.previous_response_id,
            "store": self.request.store,
            "background": False,
            **self.request.echo,
            "usage": self.usage(reply) if reply and status != IN_PROGRESS else None,
        }

    def usage(self, reply: Reply) -> dict[str, Any]:
        """Estimated tokens: the prompt this turn sent, and the answer with its thinking."""
        chat = self.request.chat
        counts = reply.usage(chat.latest_prompt if chat.conversation_id else chat.prompt)
        details = counts.get("completion_tokens_details") or {}
        return {
            "input_tokens": counts["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counts["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": details.get("reasoning_tokens", 0)},
            "total_tokens": counts["total_tokens"],
        }

    def stream(self, events: Iterable[Any], on_done: OnDone | None = None) -> Iterator[bytes]:
        """Typed server-sent events, ``response.created`` to ``response.completed``."""
        writer = _EventWriter(self)
        reply = Reply()
        try:
            for event in events:
                if event is KEEPALIVE:
                    yield KEEPALIVE_LINE
                    continue
                reply.add(event)
                if isinstance(event, (ChatOpened, HiddenReasoning)):
                    continue
                yield from writer.start()
                if isinstance(event, Finish):
                    status = _status(event.reason)
                    yield from writer.close(status)
                    body = self.envelope(status, writer.items, reply)
                    if on_done is not None:
                        on_done(body, reply.chat_id)
                    yield writer.event(f"response.{status}", response=body)
                    return
                yield from writer.write(event)
            raise UpstreamCut()
        except KimiError as exc:
            log.warning("Stream failed after it started: %s", exc.message)
            yield from writer.start()
            yield writer.failed(exc, reply)


class _EventWriter:
    """The events of one stream: the open item, the items so far, the sequence numbers."""

    def __init__(self, encoder: ResponseEncoder) -> None:
        self.encoder = encoder
        self.sequence = 0
        self.started = False
        self.items: list[dict[str, Any]] = []  # every item added, in its latest state
        self.kind: str | None = None  # the open item's type
        self.texts: list[str] = []  # the open item's text so far (or its arguments)

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        data = json.dumps(payload, ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n".encode()

    def start(self) -> Iterator[bytes]:
        if self.started:
            return
        self.started = True
        body = self.encoder.envelope(IN_PROGRESS, [])
        yield self.event("response.created", response=body)
        yield self.event("response.in_progress", response=body)

    def write(self, event: Any) -> Iterator[bytes]:
        if isinstance(event, ReasoningDelta) and event.text:
            yield from self._open("reasoning")
            self.texts.append(event.text)
            yield self.event(
                "response.reasoning_summary_text.delta",
                **self._at(),
                summary_index=0,
                delta=event.text,
            )
        elif isinstance(event, TextDelta) and event.text:
            yield from self._open("message")
            self.texts.append(event.text)
            yield self.event(
                "response.output_text.delta",
                **self._at(),
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        elif isinstance(event, ToolCall):
            yield from self.close(COMPLETED)
            yield from self._add(function_call_item(new_id("fc"), event, IN_PROGRESS, ""))
            self.kind = "function_call"
            self.texts.append(event.arguments)
            yield self.event(
                "response.function_call_arguments.delta", **self._at(), delta=event.arguments
            )
            yield from self.close(COMPLETED)

    def close(self, status: str) -> Iterator[bytes]:
        """Finish the open item: its done events, then ``response.output_item.done``."""
        if self.kind is None:
            return
        text, item, at = "".join(self.texts), self.items[-1], self._at()
        if self.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            yield self.event(
                "response.reasoning_summary_text.done", **at, summary_index=0, text=text
            )
            yield self.event(
                "response.reasoning_summary_part.done", **at, summary_index=0, part=part
            )
            item = reasoning_item(item["id"], text)
        elif self.kind == "message":
            part = output_text(text)
            yield self.event(
                "response.output_text.done", **at, content_index=0, text=text, logprobs=[]
            )
            yield self.event("response.content_part.done", **at, content_index=0, part=part)
            item = message_item(item["id"], text, status)
        else:
            yield self.event("response.function_call_arguments.done", **at, arguments=text)
            item = {**item, "arguments": text, "status": status}
        self.items[-1] = item
        self.kind, self.texts = None, []
        yield self.event("response.output_item.done", output_index=len(self.items) - 1, item=item)

    def failed(self, exc: KimiError, reply: Reply) -> bytes:
        """``response.failed``: the error, and the output as far as it got."""
        if self.kind is not None:  # an item cut off midway keeps the text it had
            text, item = "".join(self.texts), self.items[-1]
            if self.kind == "message":
                self.items[-1] = message_item(item["id"], text, INCOMPLETE)
            elif self.kind == "reasoning":
                self.items[-1] = reasoning_item(item["id"], text)
        body = self.encoder.envelope(FAILED, self.items, reply)
        code = RATE_LIMIT if isinstance(exc, RateLimited) else SERVER_ERROR
        body["error"] = {"code": code, "message": exc.message}
        return self.event("response.failed", response=body)

    def _open(self, kind: str) -> Iterator[bytes]:
        if self.kind == kind:
            return
        yield from self.close(COMPLETED)
        if kind == "reasoning":
            yield from self._add({"id": new_id("rs"), "type": "reasoning", "summary": []})
            part = {"type": "summary_text", "text": ""}
            yield self.event(
                "response.reasoning_summary_part.added", **self._at(), summary_index=0, part=part
            )
        else:
            yield from self._add(message_item(new_id("msg"), None, IN_PROGRESS))
            yield self.event(
                "response.content_part.added", **self._at(), content_index=0, part=output_text("")
            )
        self.kind = kind

    def _add(self, item: dict[str, Any]) -> Iterator[bytes]:
        self.items.append(item)
        yield self.event("response.output_item.added", output_index=len(self.items) - 1, item=item)

    def _at(self) -> dict[str, Any]:
        """Where the open item is: its id and its index in the output."""
        return {"item_id": self.items[-1]["id"], "output_index": len(self.items) - 1}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """Kimi's thinking as a reasoning item: its summary is the thinking itself."""
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """The assistant message; ``text`` None is one whose content has not started."""
    content = [] if text is None else [output_text(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def function_call_item(
    item_id: str, call: ToolCall, status: str, arguments: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
    }


def _status(finish_reason: str | None) -> str:
    return INCOMPLETE if finish_reason in INCOMPLETE_REASONS else COMPLETED
