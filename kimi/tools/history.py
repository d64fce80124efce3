"""Earlier function calls and their results in a request's ``messages``, rendered as text.

The model must see which function it called with what arguments and what came back, so an
assistant message's ``tool_calls`` (or legacy ``function_call``) and each ``tool`` (or legacy
``function``) message become the same markup the instructions ask the model to write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from .prompt import render_tool_calls, render_tool_result


@dataclass(frozen=True)
class PriorCall:
    """A call an assistant message made: what a later ``tool`` message answers."""

    call_id: str | None
    name: str
    arguments: str | dict


def read_prior_calls(item: Mapping[str, Any], param: str) -> tuple[PriorCall, ...]:
    """The calls of an assistant message (``tool_calls``, or the legacy ``function_call``)."""
    raw_calls = item.get("tool_calls")
    if raw_calls is None and item.get("function_call") is not None:
        return (_function(item["function_call"], None, f"{param}.function_call"),)
    if raw_calls is None:
        return ()
    if not isinstance(raw_calls, list):
        raise BadRequest(f"{param}.tool_calls must be an array.", param=f"{param}.tool_calls")
    calls = []
    for index, call in enumerate(raw_calls):
        call_param = f"{param}.tool_calls[{index}]"
        if not isinstance(call, dict):
            raise BadRequest(f"{call_param} must be an object.", param=call_param)
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise BadRequest(f"{call_param}.id must be a string.", param=f"{call_param}.id")
        calls.append(_function(call.get("function"), call_id, f"{call_param}.function"))
    return tuple(calls)


def _function(raw: Any, call_id: str | None, param: str) -> PriorCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise BadRequest(f"{param} needs a 'name'.", param=param)
    arguments = raw.get("arguments", "")
    if arguments is None:
        arguments = ""
    if not isinstance(arguments, (str, dict)):
        raise BadRequest(f"{param}.arguments must be a JSON string.", param=f"{param}.arguments")
    return PriorCall(call_id, raw["name"], arguments)


def with_calls(content: str, calls: tuple[PriorCall, ...]) -> str:
    """An assistant message's text followed by its calls in the call markup."""
    if not calls:
        return content
    rendered = render_tool_calls((call.name, call.arguments) for call in calls)
    return f"{content}\n{rendered}" if content.strip() else rendered


def tool_result(item: Mapping[str, Any], content: str, names: Mapping[str, str], param: str) -> str:
    """A ``tool`` (or legacy ``function``) message's content, naming the call it answers."""
    call_id = item.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise BadRequest(f"{param}.tool_call_id must be a string.", param=f"{param}.tool_call_id")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"{param}.name must be a string.", param=f"{param}.name")
    name = name or (names.get(call_id) if call_id else None)
    return render_tool_result(content, name=name, call_id=call_id)
