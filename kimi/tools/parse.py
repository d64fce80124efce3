"""Reading a complete reply: the text to show and the function calls the model wrote."""

from __future__ import annotations

from dataclasses import dataclass, field

from .calls import ParsedCall
from .scanner import MAX_CALL_CHARS, ToolCallScanner
from .spec import ToolConfig

__all__ = ["ParsedCall", "ToolReply", "parse_tool_reply"]


@dataclass(frozen=True)
class ToolReply:
    """``content``: the text before the first call (or the whole reply when there is none)."""

    content: str
    calls: list[ParsedCall] = field(default_factory=list)


def parse_tool_reply(
    text: str, config: ToolConfig | None, *, max_call_chars: int = MAX_CALL_CHARS
) -> ToolReply:
    """Split a whole reply into text and well-formed calls, leniently.

    Calls may be tagged, fenced or bare JSON; a candidate that is not entirely well-formed calls
    of the offered functions stays text. The streaming stage gives the same result.
    """
    if config is None or not config.callable_tools:
        return ToolReply(text)
    scanner = ToolCallScanner(config, max_call_chars=max_call_chars)
    pieces = scanner.feed(text) + scanner.finish()
    content = "".join(piece for piece in pieces if isinstance(piece, str))
    return ToolReply(content, [piece for piece in pieces if isinstance(piece, ParsedCall)])
