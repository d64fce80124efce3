"""The functions a client offers (``tools`` or legacy ``functions``) and how it lets them be used.

Kimi's web chat has no client-defined functions, so they are emulated in text; this module only
reads and validates the request fields into a ``ToolConfig``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest

CHOICE_AUTO = "auto"
CHOICE_REQUIRED = "required"
CHOICE_NONE = "none"
CHOICE_FUNCTION = "function"
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, what it does, its parameters' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None

    @property
    def required(self) -> tuple[str, ...]:
        """The argument names the schema marks as required."""
        return tuple((self.parameters or {}).get("required") or ())


@dataclass(frozen=True)
class ToolChoice:
    """``mode`` is auto, required, none or function (then ``name`` is the forced function)."""

    mode: str = CHOICE_AUTO
    name: str | None = None


@dataclass(frozen=True)
class ToolConfig:
    """The functions of one request and the rules for calling them.

    ``legacy`` marks the old ``functions`` / ``function_call`` fields: the answer then carries
    a single ``function_call``, so ``parallel`` is False.
    """

    tools: tuple[ToolSpec, ...]
    choice: ToolChoice = ToolChoice()
    parallel: bool = True
    legacy: bool = False

    def tool(self, name: str) -> ToolSpec | None:
        """The function called ``name``, if the client offered it."""
        return next((tool for tool in self.tools if tool.name == name), None)

    @property
    def call_required(self) -> bool:
        """``tool_choice`` is ``required`` or names a function: an answer must be a call."""
        return self.choice.mode in (CHOICE_REQUIRED, CHOICE_FUNCTION)

    @property
    def callable_tools(self) -> tuple[ToolSpec, ...]:
        """The functions the model may call in this answer (only the forced one, if any)."""
        if self.choice.mode == CHOICE_NONE:
            return ()
        if self.choice.mode == CHOICE_FUNCTION:
            return tuple(tool for tool in self.tools if tool.name == self.choice.name)
        return self.tools


def parse_tool_config(body: dict[str, Any]) -> ToolConfig | None:
    """Read ``tools``/``tool_choice``/``parallel_tool_calls`` or legacy ``functions``.

    None when the request offers no functions. Every invalid shape is a ``BadRequest`` naming
    its field.
    """
    if body.get("functions") is not None:
        if body.get("tools") is not None:
            raise BadRequest(
                "Use either 'tools' or the legacy 'functions', not both.", param="functions"
            )
        return _legacy_config(body)
    if body.get("function_call") is not None:
        raise BadRequest("'function_call' goes with the legacy 'functions'.", param="function_call")
    raw_tools = body.get("tools")
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise BadRequest("'tools' must be an array.", param="tools")
    tools = tuple(_tool(item, index) for index, item in enumerate(raw_tools or []))
    _check_unique(tools, "tools[{}].function.name")
    choice = _tool_choice(body.get("tool_choice"), tools)
    if not tools:
        return None
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls")
    return ToolConfig(tools=tools, choice=choice, parallel=parallel is not False)


def _legacy_config(body: dict[str, Any]) -> ToolConfig | None:
    if body.get("tool_choice") is not None:
        raise BadRequest("'tool_choice' goes with 'tools', not 'functions'.", param="tool_choice")
    raw = body["functions"]
    if not isinstance(raw, list):
        raise BadRequest("'functions' must be an array.", param="functions")
    tools = tuple(read_function(item, f"functions[{index}]") for index, item in enumerate(raw))
    _check_unique(tools, "functions[{}].name")
    choice = _function_call(body.get("function_call"), tools)
    if not tools:
        return None
    return ToolConfig(tools=tools, choice=choice, parallel=False, legacy=True)


def _tool(item: Any, index: int) -> ToolSpec:
    param = f"tools[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    kind = item.get("type")
    if kind != "function":
        raise BadRequest(
            f"{param} has type {kind!r}; only function tools can be emulated.",
            param=f"{param}.type",
            code="unsupported_tool_type",
        )
    return read_function(item.get("function"), f"{param}.function")


def read_function(item: Any, param: str) -> ToolSpec:
    """One function's name, description and parameters, each checked (400 naming the field)."""
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    name = item.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise BadRequest(
            f"{param}.name must be 1 to 64 letters, digits, underscores or dashes; got {name!r}.",
            param=f"{param}.name",
        )
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"{param}.description must be a string.", param=f"{param}.description")
    return ToolSpec(name, description or "", _parameters(item.get("parameters"), param))


def _parameters(schema: Any, param: str) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise BadRequest(
            f"{param}.parameters must be a JSON schema object.", param=f"{param}.parameters"
        )
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(key, str) for key in required)
    ):
        raise BadRequest(
            f"{param}.parameters.required must be an array of strings.",
            param=f"{param}.parameters.required",
        )
    return schema


def _check_unique(tools: tuple[ToolSpec, ...], param: str) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise BadRequest(f"Function {tool.name!r} is defined twice.", param=param.format(index))
        seen.add(tool.name)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    param = "tool_choice"
    if raw is None or raw in (CHOICE_AUTO, CHOICE_NONE):
        return ToolChoice(raw or CHOICE_AUTO)
    if raw == CHOICE_REQUIRED:
        if not tools:
            raise BadRequest("tool_choice 'required' needs 'tools'.", param=param)
        return ToolChoice(CHOICE_REQUIRED)
    if isinstance(raw, str):
        raise BadRequest(
            f"tool_choice must be 'auto', 'none', 'required' or a function; got {raw!r}.",
            param=param,
        )
    if not isinstance(raw, dict) or raw.get("type") != "function":
        raise BadRequest(
            'tool_choice must be a string or {"type": "function", "function": {"name"}}.',
            param=param,
        )
    function = raw.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return _named_choice(name, tools, f"{param}.function.name")


def _function_call(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    param = "function_call"
    if raw is None or raw in (CHOICE_AUTO, CHOICE_NONE):
        return ToolChoice(raw or CHOICE_AUTO)
    if not isinstance(raw, dict):
        raise BadRequest(
            f"function_call must be 'auto', 'none' or {{\"name\"}}; got {raw!r}.", param=param
        )
    return _named_choice(raw.get("name"), tools, f"{param}.name")


def _named_choice(name: Any, tools: tuple[ToolSpec, ...], param: str) -> ToolChoice:
    if not isinstance(name, str):
        raise BadRequest(f"{param} must be a string.", param=param)
    if not any(tool.name == name for tool in tools):
        raise BadRequest(f"{param} {name!r} is not one of the functions given.", param=param)
    return ToolChoice(CHOICE_FUNCTION, name)
