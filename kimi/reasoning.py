"""How the model's thinking reaches the client.

``reasoning_content`` (the default) sends it in its own field, which many clients never show;
``think_tags`` puts it in the answer text inside ``<think>`` ... ``</think>``, the form chat UIs
fold away; ``hidden`` drops it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .events import ContentEvent, Finish, HiddenReasoning, ReasoningDelta, TextDelta, ToolCall

REASONING_CONTENT = "reasoning_content"
THINK_TAGS = "think_tags"
HIDDEN = "hidden"
REASONING_MODES = (REASONING_CONTENT, THINK_TAGS, HIDDEN)
DEFAULT_REASONING_MODE = REASONING_CONTENT
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>\n\n"


def parse_reasoning_mode(value: str | None, *, name: str = "reasoning mode") -> str:
    """A mode from configuration or a request (None or empty: the default).

    Raises ``ValueError`` naming ``name`` and the modes there are; callers turn it into their
    own error (a settings error, or a ``BadRequest`` with its param).
    """
    if value is None or not value.strip():
        return DEFAULT_REASONING_MODE
    mode = value.strip().lower()
    if mode not in REASONING_MODES:
        raise ValueError(f"{name} must be one of {', '.join(REASONING_MODES)}; got {value!r}")
    return mode


def present_reasoning(events: Iterable[ContentEvent], mode: str) -> Iterator[ContentEvent]:
    """The events with reasoning shown the way ``mode`` says."""
    if mode == THINK_TAGS:
        return _think_tags(events)
    if mode == HIDDEN:
        return (
            HiddenReasoning(event.text) if isinstance(event, ReasoningDelta) else event
            for event in events
        )
    if mode == REASONING_CONTENT:
        return iter(events)  # shown as Kimi sends it: nothing is added to each event's way
    raise ValueError(f"unknown reasoning mode {mode!r}; use parse_reasoning_mode first")


def _think_tags(events: Iterable[ContentEvent]) -> Iterator[ContentEvent]:
    thinking = False
    for event in events:
        if isinstance(event, ReasoningDelta):
            if event.text:
                yield TextDelta(event.text if thinking else THINK_OPEN + event.text)
                thinking = True
            continue
        if thinking and isinstance(event, (TextDelta, ToolCall, Finish)):
            yield TextDelta(THINK_CLOSE)  # the answer starts: close the thoughts before it
            thinking = False
        yield event
