"""Emulated function calling: Kimi's web chat has none, so calls travel as text.

``spec`` reads the request's functions, ``prompt`` tells the model how to call them, ``parse``
and ``stream`` turn the calls it writes back into OpenAI tool calls.
"""

from .calls import ParsedCall, new_call_id
from .parse import ToolReply, parse_tool_reply
from .prompt import call_reminder, render_tool_calls, render_tool_result, tool_instructions
from .scanner import MAX_CALL_CHARS
from .spec import ToolChoice, ToolConfig, ToolSpec, parse_tool_config
from .stream import extract_tool_calls

__all__ = [
    "MAX_CALL_CHARS",
    "ParsedCall",
    "ToolChoice",
    "ToolConfig",
    "ToolReply",
    "ToolSpec",
    "call_reminder",
    "extract_tool_calls",
    "new_call_id",
    "parse_tool_config",
    "parse_tool_reply",
    "render_tool_calls",
    "render_tool_result",
    "tool_instructions",
]
