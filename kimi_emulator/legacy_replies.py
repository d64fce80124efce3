"""The deterministic answer of one ``legacy`` completion call, planned as a list of SSE events.

Pure, like ``replies``: the route writes the plan out, and faults are edits of the plan. An
answer stopped by a length fault is split into parts, one per completion call: the first call
streams the first part, each ``continue`` call the next one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .faults import Fault
from .replies import ReplyRequest, answer_text, text_pieces
from .state import Turn

SEARCH_RESULTS = (
    ("Weather report 1", "https://example.com/weather/1"),
    ("Weather report 2", "https://example.com/weather/2"),
)
DEBUG_MESSAGE = "emulator: answer planned"
FILES_NOTE = " [files: {}]"
# A line a client adds to name an attached file, e.g. ``[file: a.pdf]`` or ``[image: b.png]``.
FILE_NOTE_LINE = re.compile(r"\[(?:file|image): [^\n]*\]")
# How many times each length fault stops the answer before its end.
LENGTH_STOPS = {"length": 1, "length_twice": 2}
INTERRUPTED = ("chat.completion.interrupted", "the model stopped unexpectedly")
CONTENT_FILTER = ("content_filter", "The content is not allowed")
DONE = {"event": "done"}
ALL_DONE = {"event": "all_done"}


@dataclass(frozen=True)
class PlannedEvent:
    """One ``data:`` event to write, after ``pause`` seconds of silence."""

    data: dict[str, Any]
    pause: float = 0.0


def answer_parts(
    prompt: str, fault: Fault | None, file_names: Sequence[str] = (), scripted: str | None = None
) -> list[list[str]]:
    """The answer's pieces, split into one part per completion call the client has to make.

    An answer about referenced files names them, in order, so tests see they arrived; it talks
    about the prompt's last line that is not a note naming an attached file.
    """
    if file_names:
        text = answer_text(ReplyRequest(_without_file_notes(prompt), scripted=scripted))
        text += FILES_NOTE.format(", ".join(file_names))
    else:
        text = answer_text(ReplyRequest(prompt, scripted=scripted))
    pieces = text_pieces(text)
    stops = LENGTH_STOPS.get(fault.name, 0) if fault else 0
    cuts = [max(1, len(pieces) * (stop + 1) // (stops + 1)) for stop in range(stops)]
    bounds = [0, *cuts, len(pieces)]
    return [pieces[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def plan_turn(
    turn: Turn,
    prompt: str,
    pieces: list[str],
    more_to_come: bool,
    search: bool = False,
    fault: Fault | None = None,
    refs: Sequence[str] = (),
) -> list[PlannedEvent]:
    """The events of a new turn's completion call, shaped by a stream fault if one applies."""
    request = {"id": turn.user_message_id, "group_id": turn.group_id, "content": prompt}
    events = [
        {"event": "req", **request, "refs": list(refs)},
        _resp(turn),
        {"event": "ping"},
        {"event": "rename", "text": turn.chat_name},
    ]
    if search:
        events += _search_events()
    events.append({"event": "debug", "message": DEBUG_MESSAGE})
    events += _answer_events(pieces, more_to_come)
    return _apply_fault([PlannedEvent(data) for data in events], fault)


def plan_continuation(
    turn: Turn, pieces: list[str], more_to_come: bool, fault: Fault | None = None
) -> list[PlannedEvent]:
    """The events of a ``continue`` call: the answer's next part, under the same reply id."""
    events = [_resp(turn), *_answer_events(pieces, more_to_come)]
    return _apply_fault([PlannedEvent(data) for data in events], fault)


def error_events(error_type: str, message: str) -> list[PlannedEvent]:
    """A stream that carries nothing but an in-stream error."""
    return [PlannedEvent(_error(error_type, message))]


def ends_reply(event: PlannedEvent) -> bool:
    """Whether the reply is over, as far as the backend knows, once this event goes out."""
    return event.data.get("event") in ("done", "error")


def streamed_text(events: list[PlannedEvent]) -> str:
    """The answer text the events carry, as a client would concatenate it."""
    return "".join(event.data["text"] for event in events if event.data.get("event") == "cmpl")


def encode_event(data: dict[str, Any]) -> bytes:
    """One SSE event: a ``data:`` line of compact JSON (raw UTF-8, so characters can split)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _without_file_notes(prompt: str) -> str:
    lines = prompt.splitlines()
    return "\n".join(line for line in lines if not FILE_NOTE_LINE.fullmatch(line.strip()))


def _resp(turn: Turn) -> dict[str, Any]:
    return {"event": "resp", "id": turn.assistant_message_id, "group_id": turn.group_id}


def _search_events() -> list[dict[str, Any]]:
    results = [
        {"event": "search_plus", "msg": {"type": "get_res", "title": title, "url": url}}
        for title, url in SEARCH_RESULTS
    ]
    answer = {"type": "answer", "successNum": len(SEARCH_RESULTS)}
    start = {"event": "search_plus", "msg": {"type": "start"}}
    return [start, *results, {"event": "search_plus", "msg": answer}]


def _answer_events(pieces: list[str], more_to_come: bool) -> list[dict[str, Any]]:
    events = [{"event": "cmpl", "text": piece} for piece in pieces]
    if more_to_come:
        events.append({"event": "length"})
    return [*events, DONE, ALL_DONE]


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"event": "error", "error": {"error_type": error_type, "message": message}}


def _apply_fault(events: list[PlannedEvent], fault: Fault | None) -> list[PlannedEvent]:
    if fault is None:
        return events
    if fault.name == "silence":
        after_resp = _index_of(events, "resp") + 1
        return [*events[:after_resp], *_pause_first(events[after_resp:], fault.seconds)]
    if fault.name == "slow":
        return [events[0]] + [replace(event, pause=fault.seconds) for event in events[1:]]
    head = _through_first_cmpl(events)
    if fault.name == "cut":
        return head
    if fault.name == "stream_error":
        return [*head, PlannedEvent(_error(*INTERRUPTED))]
    if fault.name == "moderation":
        return [
            *head,
            PlannedEvent(_error(*CONTENT_FILTER)),
            PlannedEvent(DONE),
            PlannedEvent(ALL_DONE),
        ]
    return events


def _index_of(events: list[PlannedEvent], kind: str) -> int:
    return next(i for i, event in enumerate(events) if event.data.get("event") == kind)


def _pause_first(events: list[PlannedEvent], seconds: float) -> list[PlannedEvent]:
    return [replace(events[0], pause=seconds), *events[1:]] if events else []


def _through_first_cmpl(events: list[PlannedEvent]) -> list[PlannedEvent]:
    """The events up to a word into the answer (all but the end when there is no answer)."""
    for index, event in enumerate(events):
        if event.data.get("event") == "cmpl":
            return events[: index + 1]
    return [event for event in events if event.data.get("event") not in ("done", "all_done")]
