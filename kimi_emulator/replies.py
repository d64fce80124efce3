"""The deterministic answer stream of one Chat call, planned as a list of frames.

Planning is pure: the route writes the plan out (with pauses and splitting), and faults are
edits of the plan, so every failure shape is one small function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .faults import Fault
from .frames import END_OF_STREAM
from .state import Turn
from .stream_failures import FAILURE_FAULTS, stream_failure
from .web_search import SEARCH_SUFFIX_PIECES, search_chunks, tool_blocks, used_search_chunks

ANSWER_PREFIX = "Emulator reply to: "
THINKING_PREFIX = "Thinking about: "
ANSWER_LINE_LIMIT = 200
CHAT_NAME_LENGTH = 20
THINKING_LINE_LIMIT = 40
# With search on, the answer ends with citations of its sources (see web_search.py).
SEARCH_SUFFIX = "".join(SEARCH_SUFFIX_PIECES)
WORDS_PER_PIECE = 2
THINK_BLOCK, TEXT_BLOCK, TOOL_BLOCK = "b1", "b2", "b3"
GENERATING = "MESSAGE_STATUS_GENERATING"
COMPLETED = "MESSAGE_STATUS_COMPLETED"
BLOCKED = "MESSAGE_STATUS_BLOCKED"


@dataclass(frozen=True)
class ReplyRequest:
    """What the Chat request asks for, as far as the reply depends on it."""

    prompt: str
    thinking: bool = False
    search: bool = False
    scripted: str | None = None  # the answer a script in the prompt chose (see scripts.py)


@dataclass(frozen=True)
class PlannedFrame:
    """One frame to write, after ``pause`` seconds of silence."""

    message: dict[str, Any] = field(default_factory=dict)
    flags: int = 0
    pause: float = 0.0


def prompt_line(prompt: str) -> str:
    """The prompt's last non-empty line, stripped: what the reply talks about."""
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def chat_title(prompt: str) -> str:
    """The name a chat gets from its first prompt (empty for a blank prompt)."""
    return prompt_line(prompt)[:CHAT_NAME_LENGTH]


def answer_text(request: ReplyRequest) -> str:
    """The full answer text, citation markers included."""
    return _plain_answer(request) + (SEARCH_SUFFIX if request.search else "")


def _plain_answer(request: ReplyRequest) -> str:
    if request.scripted is not None:
        return request.scripted
    return ANSWER_PREFIX + prompt_line(request.prompt)[:ANSWER_LINE_LIMIT]


def thinking_text(request: ReplyRequest) -> str:
    """The full thinking text."""
    return THINKING_PREFIX + prompt_line(request.prompt)[:THINKING_LINE_LIMIT]


def plan_reply(turn: Turn, request: ReplyRequest, fault: Fault | None = None) -> list[PlannedFrame]:
    """The frames answering ``request`` in ``turn``, shaped by a stream fault if one applies."""
    frames = [_frame(message) for message in _opening(turn)]
    if request.thinking:
        frames += _block_frames(THINK_BLOCK, "think", text_pieces(thinking_text(request)))
    if fault and fault.name == "degrade":
        notice = {"type": "TYPE_MODEL_DEGRADE", "message": "Kimi is busy; a lighter model answers"}
        frames.append(_frame({"notice": notice}))
    frames += _answer_frames(request, turn)
    frames += [_frame(_status(turn, COMPLETED)), _done(len(frames)), _end()]
    return _apply_fault(frames, turn, fault) if fault else frames


def error_stream(code: str, message: str) -> list[PlannedFrame]:
    """A stream that carries nothing but an error in its end-of-stream frame."""
    return [_end({"error": {"code": code, "message": message}})]


def ends_reply(frame: PlannedFrame) -> bool:
    """Whether the reply is over, as far as the backend knows, once this frame goes out."""
    message = frame.message
    return (
        bool(frame.flags & END_OF_STREAM)
        or "done" in message
        or "error" in message
        or message.get("mask") == "message.status"
    )


def reply_text(frames: list[PlannedFrame]) -> str:
    """The answer text the frames carry, as a client would concatenate it."""
    return "".join(
        frame.message["block"]["text"]["content"]
        for frame in frames
        if frame.message.get("mask") in ("block.text", "block.text.content")
    )


def _opening(turn: Turn) -> list[dict[str, Any]]:
    return [
        {"chat": {"id": turn.chat_id, "name": turn.chat_name}},
        _message(turn.user_message_id, turn.parent_id, "user", COMPLETED),
        _message(turn.assistant_message_id, turn.user_message_id, "assistant", GENERATING),
        {"heartbeat": {}},
    ]


def _answer_frames(request: ReplyRequest, turn: Turn) -> list[PlannedFrame]:
    pieces = text_pieces(_plain_answer(request))
    if not request.search:
        return _block_frames(TEXT_BLOCK, "text", pieces)
    reply_id = turn.assistant_message_id
    search = [_frame(op) for op in [*tool_blocks(TOOL_BLOCK), search_chunks(reply_id)]]
    text = _block_frames(TEXT_BLOCK, "text", pieces + list(SEARCH_SUFFIX_PIECES))
    return [*search, *text, _frame(used_search_chunks(reply_id))]


def text_pieces(text: str) -> list[str]:
    """The first word alone, then a few words a piece, spaces kept: increments to concatenate."""
    words = re.findall(r"\s*\S+", text) or [text]
    rest = words[1:]
    grouped = ["".join(rest[i : i + WORDS_PER_PIECE]) for i in range(0, len(rest), WORDS_PER_PIECE)]
    return [words[0], *grouped]


def _block_frames(block_id: str, kind: str, pieces: list[str]) -> list[PlannedFrame]:
    def block(content: str) -> dict[str, Any]:
        return {"id": block_id, kind: {"content": content}}

    first = _frame({"op": "set", "mask": f"block.{kind}", "block": block(pieces[0])})
    mask = f"block.{kind}.content"
    return [first] + [_frame({"op": "append", "mask": mask, "block": block(p)}) for p in pieces[1:]]


def _apply_fault(frames: list[PlannedFrame], turn: Turn, fault: Fault) -> list[PlannedFrame]:
    if fault.name == "silence":
        return [frames[0], replace(frames[1], pause=fault.seconds), *frames[2:]]
    if fault.name == "slow":
        return [frames[0]] + [replace(frame, pause=fault.seconds) for frame in frames[1:]]
    if fault.name in FAILURE_FAULTS:
        return _with_failure(frames, turn, fault.name)
    head = _through_first_text_append(frames)
    if fault.name == "cut":
        return head
    if fault.name == "stream_error":
        return [*head, _frame({"error": {"code": "internal", "message": "model crashed"}}), _end()]
    if fault.name == "moderation":
        blocked = _frame(_status(turn, BLOCKED))
        return [*head, blocked, _done(len(head) + 1), _end()]
    return frames


def _with_failure(frames: list[PlannedFrame], turn: Turn, name: str) -> list[PlannedFrame]:
    """The reply broken off by an error frame or an exception block (see stream_failures.py)."""
    failure = stream_failure(name)
    opening = frames[: len(_opening(turn))]  # no answer content yet
    head = _through_first_text_append(frames) if failure.after_text else opening
    if failure.is_error_frame:
        done = [_done(len(head))] if failure.after_done else []
        return [*head, *done, _end(failure.message)]
    tail = [_frame(failure.message), _frame(_status(turn, COMPLETED)), _done(len(head) + 2)]
    return [*head, *tail, _end()]


def _through_first_text_append(frames: list[PlannedFrame]) -> list[PlannedFrame]:
    """The frames up to a few words into the answer."""
    for index, frame in enumerate(frames):
        if frame.message.get("mask") == "block.text.content":
            return frames[: index + 1]
    for index, frame in enumerate(frames):
        if frame.message.get("mask") == "block.text":
            return frames[: index + 1]
    return frames


def _message(message_id: str, parent_id: str, role: str, status: str) -> dict[str, Any]:
    message = {"id": message_id, "parentId": parent_id, "role": role, "status": status}
    return {"op": "set", "mask": "message", "message": message}


def _status(turn: Turn, status: str) -> dict[str, Any]:
    message = {"id": turn.assistant_message_id, "status": status}
    return {"op": "set", "mask": "message.status", "message": message}


def _done(event_offset: int) -> PlannedFrame:
    return _frame({"eventOffset": event_offset, "done": {}})


def _frame(message: dict[str, Any]) -> PlannedFrame:
    return PlannedFrame(message)


def _end(message: dict[str, Any] | None = None) -> PlannedFrame:
    return PlannedFrame(message or {}, flags=END_OF_STREAM)
