"""What the model reads about the functions: the instructions, earlier calls, their results.

The instructions travel with every turn, so they are kept short.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .markup import CALL_CLOSE, CALL_OPEN, RESULT_CLOSE, RESULT_OPEN
from .spec import CHOICE_FUNCTION, CHOICE_REQUIRED, ToolConfig, ToolSpec

CALL_FORMAT = f'{CALL_OPEN}{{"name": "FUNCTION_NAME", "arguments": {{...}}}}{CALL_CLOSE}'
NO_CALLS_RULE = (
    f"Do not call any function in this answer: reply in plain text, without {CALL_OPEN}."
)


def tool_instructions(config: ToolConfig) -> str:
    """The system block describing the callable functions, the call format and the rules."""
    tools = config.callable_tools
    if not tools:
        return NO_CALLS_RULE
    lines = ["You can call these functions (parameters as JSON Schema):"]
    lines += [_describe(tool) for tool in tools]
    lines += [
        "To call a function, write exactly this line, one per call:",
        CALL_FORMAT,
        '"arguments" is a JSON object matching the parameters. Ask the user for a required '
        "value you do not know; never guess one.",
        "After the call lines, stop and write nothing more. Never write a result yourself: it "
        f'comes back in a later message as {RESULT_OPEN} name="..." call_id="...">.',
        _choice_rule(config),
    ]
    return "\n".join(lines)


def call_reminder(config: ToolConfig) -> str:
    """The follow-up message when a required call is missing from the answer."""
    return (
        f"You answered without calling a function. {_choice_rule(config)} Write only the call "
        f"line(s), in exactly this format: {CALL_FORMAT}"
    )


def _describe(tool: ToolSpec) -> str:
    head = f"- {tool.name}: {tool.description}" if tool.description else f"- {tool.name}"
    if not tool.parameters:
        return head + " (no parameters)"
    return f"{head}\n  parameters: {_compact(tool.parameters)}"


def _choice_rule(config: ToolConfig) -> str:
    if config.choice.mode == CHOICE_FUNCTION:
        once = " (one call)" if not config.parallel else ""
        return f"You must call {config.choice.name} now{once}, and no other function."
    if config.choice.mode == CHOICE_REQUIRED:
        count = "exactly one function" if not config.parallel else "at least one function"
        return f"You must call {count} now."
    how_many = "at most one per answer" if not config.parallel else "several at once if useful"
    return (
        f"Call a function only when that helps ({how_many}); otherwise answer normally, "
        f"without {CALL_OPEN}."
    )


def render_tool_calls(calls: Iterable[tuple[str, str | Mapping[str, Any]]]) -> str:
    """An assistant's earlier calls in the history, as ``(name, arguments)`` pairs.

    They are written in the call format, so the model sees its own calls as it made them.
    Arguments may be JSON text (as clients send them back) or an object.
    """
    return "\n".join(
        CALL_OPEN
        + json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False)
        + CALL_CLOSE
        for name, arguments in calls
    )


def _arguments(arguments: str | Mapping[str, Any]) -> Any:
    if not isinstance(arguments, str):
        return dict(arguments)
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments  # not JSON: shown as the string the client gave


def render_tool_result(content: str, *, name: str | None, call_id: str | None) -> str:
    """A ``tool`` message in the history: its result, naming the function and the call."""
    attributes = "".join(
        f" {key}={json.dumps(value, ensure_ascii=False)}"
        for key, value in (("name", name), ("call_id", call_id))
        if value
    )
    return f"{RESULT_OPEN}{attributes}>\n{content}\n{RESULT_CLOSE}"


def _compact(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
