"""The text markup of emulated function calls and results: one definition for prompt and parser.

Kimi's web chat has no function calling, so the model writes each call as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, a tag pair that ordinary prose and
Markdown do not contain.
"""

from __future__ import annotations

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESULT_OPEN = "<tool_result"
RESULT_CLOSE = "</tool_result>"
FENCE = "```"
