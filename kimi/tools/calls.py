"""Reading one block of model output as function calls, and checking them against the tools.

A block is what sits inside ``<tool_call>`` tags, a code fence or a bare JSON answer: one or
more call objects (or arrays of them). It counts only if every call in it is well-formed.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

from .lenient_json import json_values, load_lenient
from .markup import CALL_CLOSE, CALL_OPEN, FENCE
from .spec import ToolConfig, ToolSpec

# Models name the arguments differently from the format they were shown.
ARGUMENT_KEYS = ("arguments", "parameters", "args")
# One stray character after the JSON (an extra "}" is the usual one) is forgiven.
MAX_TRAILING_GARBAGE = 1
CALL_ID_PREFIX = "call_"
CALL_ID_LENGTH = 24
_CALL_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ParsedCall:
    """A call the model wrote: a known function and its arguments as compact JSON text."""

    name: str
    arguments_json: str


def new_call_id() -> str:
    """A fresh OpenAI-style call id: ``call_`` and 24 random letters and digits."""
    suffix = "".join(secrets.choice(_CALL_ID_ALPHABET) for _ in range(CALL_ID_LENGTH))
    return CALL_ID_PREFIX + suffix


def calls_in_block(text: str, config: ToolConfig) -> list[ParsedCall] | None:
    """The calls a block holds, or None unless it is nothing but well-formed calls."""
    body = _unfence(text.strip())
    if CALL_OPEN in body:
        return _tagged_calls(body, config)
    values, rest = json_values(body)
    if not values or len(rest) > MAX_TRAILING_GARBAGE:
        return None
    objects: list[Any] = []
    for value in values:
        objects.extend(value if isinstance(value, list) else [value])
    calls = [_checked_call(item, config) for item in objects]
    if not calls or None in calls:
        return None
    return calls  # type: ignore[return-value]


def _unfence(body: str) -> str:
    """A block wrapped in its own code fence (inside the tags) is read without it."""
    if not body.startswith(FENCE) or "\n" not in body:
        return body
    body = body.split("\n", 1)[1].rstrip()
    return body[: -len(FENCE)] if body.endswith(FENCE) else body


def _tagged_calls(body: str, config: ToolConfig) -> list[ParsedCall] | None:
    before, *blocks = body.split(CALL_OPEN)
    if before.strip():
        return None
    calls: list[ParsedCall] = []
    for block in blocks:
        inner, _, after = block.partition(CALL_CLOSE)
        found = calls_in_block(inner, config)
        if found is None or after.strip():
            return None
        calls.extend(found)
    return calls


def _checked_call(item: Any, config: ToolConfig) -> ParsedCall | None:
    if not isinstance(item, dict):
        return None
    if "name" not in item and isinstance(item.get("function"), dict):
        item = item["function"]  # the OpenAI shape {"type": "function", "function": {...}}
    tool = _callable_tool(item.get("name"), config)
    arguments = _arguments(item)
    if tool is None or arguments is None or any(key not in arguments for key in tool.required):
        return None
    compact = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return ParsedCall(tool.name, compact)


def _callable_tool(name: Any, config: ToolConfig) -> ToolSpec | None:
    return next((tool for tool in config.callable_tools if tool.name == name), None)


def _arguments(item: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments object; absent, null or empty means none. Never filled in."""
    key = next((key for key in ARGUMENT_KEYS if key in item), None)
    raw = item[key] if key else None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = load_lenient(raw)
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None
