"""Internal stream events: what every upstream adapter yields, whatever its protocol.

Failures are not events: adapters raise a ``KimiError`` subclass, and the encoder decides
whether it becomes an HTTP error (before the first byte) or an in-stream error (after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTENT_FILTER = "content_filter"
FINISH_TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class ChatOpened:
    """The upstream chat this turn lives in (new or continued)."""

    chat_id: str


@dataclass(frozen=True)
class ReplyStarted:
    """The id of the assistant message; the parent of the next turn in this chat."""

    message_id: str


@dataclass(frozen=True)
class TextDelta:
    """A piece of answer text, to be appended."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking, to be appended."""

    text: str


@dataclass(frozen=True)
class HiddenReasoning:
    """Thinking the client asked not to see: not shown, still counted in ``usage``."""

    text: str


@dataclass(frozen=True)
class Citation:
    """One web search result the answer may refer to."""

    title: str
    url: str


@dataclass(frozen=True)
class ToolCall:
    """One complete function call the model asked for (tool calling is emulated in text).

    ``index`` counts the calls of one answer from 0; ``arguments`` is the JSON text of an object.
    """

    index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Finish:
    """The turn ended normally; ``reason`` is an OpenAI ``finish_reason``.

    ``stop_sequence`` names the client's stop string that ended the text, when one did (the
    Anthropic surface reports it); a detail, not part of what makes two finishes equal.
    """

    reason: str = FINISH_STOP
    stop_sequence: str | None = field(default=None, compare=False)


Event = ChatOpened | ReplyStarted | TextDelta | ReasoningDelta | Citation | Finish
ContentEvent = TextDelta | ReasoningDelta | HiddenReasoning | ToolCall | Finish
