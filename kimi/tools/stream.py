"""The streaming stage that turns function calls written in the answer text into events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..events import FINISH_TOOL_CALLS, ContentEvent, Finish, TextDelta, ToolCall
from .calls import ParsedCall, new_call_id
from .scanner import MAX_CALL_CHARS, Piece, ToolCallScanner
from .spec import ToolConfig


def extract_tool_calls(
    events: Iterable[ContentEvent],
    config: ToolConfig | None,
    *,
    max_call_chars: int = MAX_CALL_CHARS,
) -> Iterator[ContentEvent]:
    """Pass text through, holding back only what may be a call; calls become ``ToolCall``s.

    At the upstream ``Finish`` the held text is settled, and the finish reason becomes
    ``tool_calls`` if any call was emitted. Other events pass through unchanged, in order.
    """
    if config is None or not config.callable_tools:
        return iter(events)  # no stage at all: nothing is added to each event's way
    return _extracted(events, config, max_call_chars)


def _extracted(
    events: Iterable[ContentEvent], config: ToolConfig, max_call_chars: int
) -> Iterator[ContentEvent]:
    scanner: ToolCallScanner | None = ToolCallScanner(config, max_call_chars=max_call_chars)
    calls = _CallEvents()
    for event in events:
        if scanner is not None and isinstance(event, TextDelta):
            yield from calls.events(scanner.feed(event.text))
        elif scanner is not None and isinstance(event, Finish):
            yield from calls.events(scanner.finish())
            yield Finish(FINISH_TOOL_CALLS) if scanner.calls else event
            scanner = None  # anything after the finish is passed on as it is
        else:
            yield event
    if scanner is not None:  # the upstream ended without a finish: release what is held
        yield from calls.events(scanner.finish())


class _CallEvents:
    """Scanner pieces as events: adjacent text joined, calls numbered from 0 with fresh ids."""

    def __init__(self) -> None:
        self._index = 0

    def events(self, pieces: list[Piece]) -> Iterator[ContentEvent]:
        text: list[str] = []
        for piece in pieces:
            if isinstance(piece, ParsedCall):
                if text:
                    yield TextDelta("".join(text))
                    text = []
                yield ToolCall(self._index, new_call_id(), piece.name, piece.arguments_json)
                self._index += 1
            elif piece:
                text.append(piece)
        if text:
            yield TextDelta("".join(text))
