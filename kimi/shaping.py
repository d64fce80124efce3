"""What the client asked of the answer, applied to the turn's events on their way out.

Each stage is a generator over content events (see its module). The order matters: the token
budget counts everything Kimi wrote; stop strings cut the text; calls and JSON are read from
what is left; reasoning is shown (or not) last, so ``<think>`` text is never cut or parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .chat_request import ChatRequest
from .events import ContentEvent
from .reasoning import present_reasoning
from .sampling import cut_at_stop, limit_tokens
from .structured import enforce_json
from .tools import extract_tool_calls


def shape_reply(events: Iterable[ContentEvent], request: ChatRequest) -> Iterator[ContentEvent]:
    """The events as the client asked for them: limits, calls, JSON, reasoning display."""
    events = limit_tokens(events, request.sampling.max_tokens)
    events = cut_at_stop(events, request.sampling.stop)
    events = extract_tool_calls(events, request.tools)
    events = enforce_json(events, request.response_format)
    return present_reasoning(events, request.reasoning_mode)
