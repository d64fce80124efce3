"""Parsing an OpenAI ``/v1/responses`` body into the service's one chat request.

``input`` (a string, or message, ``function_call`` and ``function_call_output`` items) becomes
the same messages every surface sends; ``instructions`` is a system message. Knobs Kimi has no
way to honour are accepted and ignored when that is harmless, refused when it is not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .chat_request import ChatRequest, check_file_count, file_url, read_flag
from .errors import BadRequest
from .history import FileRef, Message
from .models import parse_model
from .reasoning import REASONING_CONTENT
from .sampling import Sampling
from .settings import MAX_FILES_PER_MESSAGE
from .structured import JSON_OBJECT, ResponseFormat, _json_schema_format
from .tools import ToolChoice, ToolConfig, ToolSpec
from .tools.history import PriorCall, with_calls
from .tools.prompt import render_tool_result
from .tools.spec import (
    CHOICE_AUTO,
    CHOICE_FUNCTION,
    CHOICE_NONE,
    CHOICE_REQUIRED,
    read_function,
)

log = logging.getLogger(__name__)

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")  # an earlier answer sent back as input
# Items a client sends back from an earlier ``output`` that carry nothing the model needs again.
SKIPPED_ITEMS = ("reasoning",)
# Reasoning efforts: Kimi thinks or it does not; "xhigh" is thinking as "high" is.
EFFORTS = {"minimal": "none", "xhigh": "high"}
# Fields the web chat cannot honour that are harmless to ignore, with their JSON type.
IGNORED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "metadata": dict,
    "user": str,
    "truncation": str,
    "service_tier": str,
    "prompt_cache_key": str,
    "prompt_cache_retention": str,
    "safety_identifier": str,
    "include": list,
    "stream_options": dict,
    "max_tool_calls": int,  # limits built-in tools, and there are none here
}
# Fields whose meaning cannot be kept: a 400 saying why, rather than an answer that ignores them.
REFUSED_FIELDS = {
    "background": "Background responses are not supported: Kimi's answer is streamed or "
    "waited for. Leave 'background' out (or false).",
    "conversation": "The Conversations API is not supported; chain responses with "
    "'previous_response_id' instead.",
    "prompt": "Stored prompt templates are not supported; send 'instructions' and 'input'.",
    "top_logprobs": "Log probabilities are not available: Kimi's web chat does not return them.",
    "context_management": "Context management (compaction) is not supported.",
}


@dataclass(frozen=True)
class ResponsesRequest:
    """A Responses request: the chat turn it runs as, and what the answer echoes back."""

    chat: ChatRequest
    model: str
    store: bool = True
    previous_response_id: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats

    @property
    def stream(self) -> bool:
        return self.chat.stream


def previous_response_id(body: Any) -> str | None:
    """The ``previous_response_id`` of a body, checked: read first, to find the earlier chat."""
    raw = body.get("previous_response_id") if isinstance(body, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest(
            "'previous_response_id' must be a non-empty string.", param="previous_response_id"
        )
    return raw.strip()


def parse_responses_request(
    body: Any,
    *,
    max_files: int = MAX_FILES_PER_MESSAGE,
    prior_calls: Mapping[str, str] | None = None,
) -> ResponsesRequest:
    """Validate a Responses body; every problem is a ``BadRequest`` naming its field.

    ``prior_calls`` maps the call ids of the previous response to their function names, so a
    ``function_call_output`` sent alone still names the function it answers.
    """
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    _refuse_and_ignore(body)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise BadRequest("'model' must be a non-empty string.", param="model")
    instructions = _instructions(body.get("instructions"))
    messages = _input(body.get("input"), max_files, dict(prior_calls or {}))
    tools = _tool_config(body.get("tools"), body.get("tool_choice"), body)
    max_output_tokens = _max_output_tokens(body.get("max_output_tokens"))
    options = parse_model(model, reasoning_effort=_effort(body.get("reasoning")))
    previous = previous_response_id(body)
    store = read_flag(body, "store", default=True)
    chat = ChatRequest(
        options=options,
        messages=(*instructions, *messages),
        conversation_id=None,  # the route sets the kept chat of previous_response_id
        keep_chat=store,
        stream=read_flag(body, "stream", default=False),
        tools=tools,
        response_format=_text_format(body.get("text")),
        sampling=Sampling(max_tokens=max_output_tokens),
        reasoning_mode=options.reasoning_mode or REASONING_CONTENT,
        shows_chat_id=False,  # a response id stands for it, recorded only when it completes
    )
    echo = {
        "instructions": instructions[0].content if instructions else None,
        "max_output_tokens": max_output_tokens,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice", CHOICE_AUTO),
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "metadata": body.get("metadata") or {},
        "user": body.get("user"),
        "truncation": body.get("truncation") or "disabled",
    }
    return ResponsesRequest(
        chat=chat,
        model=options.name,
        store=store,
        previous_response_id=previous,
        echo=echo,
    )


def _refuse_and_ignore(body: dict[str, Any]) -> None:
    for name, why in REFUSED_FIELDS.items():
        if body.get(name) not in (None, False, 0):
            raise BadRequest(why, param=name, code="unsupported_parameter")
    for name, kind in IGNORED_FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise BadRequest(
                f"'{name}' has the wrong type (it is accepted and ignored: Kimi's web chat has "
                "no such setting).",
                param=name,
            )


def _instructions(raw: Any) -> tuple[Message, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, str):
        raise BadRequest("'instructions' must be a string.", param="instructions")
    return (Message("system", raw),) if raw.strip() else ()


def _input(raw: Any, max_files: int, call_names: dict[str, str]) -> list[Message]:
    if isinstance(raw, str):
        if not raw.strip():
            raise BadRequest("'input' has no text to send.", param="input")
        return [Message("user", raw)]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'input' must be a string or a non-empty array of items.", param="input")
    builder = _History(call_names)
    for index, item in enumerate(raw):
        builder.add(item, f"input[{index}]")
    builder.finish()
    messages = builder.messages
    for message, param in zip(messages, builder.params, strict=True):
        check_file_count(message, param, max_files)
    if not any(m.content.strip() or m.files for m in messages):
        raise BadRequest("'input' has no text to send.", param="input")
    return messages


@dataclass
class _AssistantTurn:
    """An earlier answer sent back as input: its text and the calls that follow it."""

    param: str
    texts: list[str] = field(default_factory=list)
    calls: list[PriorCall] = field(default_factory=list)

    def message(self) -> Message:
        return Message("assistant", with_calls("\n".join(self.texts), tuple(self.calls)))


class _History:
    """Input items folded into messages: the calls after an assistant message join it."""

    def __init__(self, call_names: dict[str, str]) -> None:
        self.call_names = call_names
        self.messages: list[Message] = []
        self.params: list[str] = []  # where each message came from, for errors
        self._turn: _AssistantTurn | None = None

    def add(self, item: Any, param: str) -> None:
        if not isinstance(item, dict):
            raise BadRequest(f"{param} must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "function_call":
            self._assistant(param).calls.append(self._function_call(item, param))
        elif kind == "message" and item.get("role") == "assistant":
            self.finish()
            text, _ = _content(item.get("content"), f"{param}.content", assistant=True)
            self._assistant(param).texts.append(text)
        elif kind == "message":
            self.finish()
            self._message(item, param)
        elif kind == "function_call_output":
            self.finish()
            self._append(self._function_output(item, param), param)
        elif kind not in SKIPPED_ITEMS:
            raise BadRequest(
                f"{param} has type {kind!r}; supported input items are message, function_call "
                "and function_call_output.",
                param=f"{param}.type",
                code="unsupported_input_item",
            )

    def finish(self) -> None:
        """End the assistant turn being built, if any, as one message."""
        turn, self._turn = self._turn, None
        if turn is not None:
            self._append(turn.message(), turn.param)

    def _assistant(self, param: str) -> _AssistantTurn:
        if self._turn is None:
            self._turn = _AssistantTurn(param)
        return self._turn

    def _append(self, message: Message, param: str) -> None:
        self.messages.append(message)
        self.params.append(param)

    def _message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable
            raise BadRequest(
                f"{param}.role must be user, system, developer or assistant; got {role!r}.",
                param=f"{param}.role",
            )
        text, files = _content(item.get("content"), f"{param}.content", assistant=False)
        self._append(Message(ROLES[role], text, files), f"{param}.content")

    def _function_call(self, item: dict[str, Any], param: str) -> PriorCall:
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        _require_string(call_id, f"{param}.call_id")
        _require_string(name, f"{param}.name")
        if not isinstance(arguments, str):
            raise BadRequest(
                f"{param}.arguments must be a JSON string.", param=f"{param}.arguments"
            )
        self.call_names[call_id] = name
        return PriorCall(call_id, name, arguments)

    def _function_output(self, item: dict[str, Any], param: str) -> Message:
        call_id, output = item.get("call_id"), item.get("output")
        _require_string(call_id, f"{param}.call_id")
        if isinstance(output, str):
            text, files = output, ()
        elif isinstance(output, list):
            text, files = _content(output, f"{param}.output", assistant=False)
        else:
            raise BadRequest(
                f"{param}.output must be a string or an array of parts.", param=f"{param}.output"
            )
        content = render_tool_result(text, name=self.call_names.get(call_id), call_id=call_id)
        return Message("tool", content, files)


def _require_string(value: Any, param: str) -> None:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{param} must be a non-empty string.", param=param)


def _content(raw: Any, param: str, *, assistant: bool) -> tuple[str, tuple[FileRef, ...]]:
    if isinstance(raw, str):
        return raw, ()
    if not isinstance(raw, list):
        raise BadRequest(f"{param} must be a string or an array of parts.", param=param)
    texts, files = [], []
    allowed = OUTPUT_PARTS + INPUT_PARTS[:1] if assistant else INPUT_PARTS
    for index, part in enumerate(raw):
        part_param = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise BadRequest(
                f"{part_param} has type {kind!r}; supported parts are {', '.join(allowed)}.",
                param=f"{part_param}.type" if isinstance(part, dict) else part_param,
                code="unsupported_content_type",
            )
        if kind == "input_image":
            files.append(_image(part, part_param))
        elif kind == "input_file":
            files.append(_file(part, part_param))
        else:
            key = "refusal" if kind == "refusal" else "text"
            text = part.get(key)
            if not isinstance(text, str):
                raise BadRequest(
                    f"{part_param}.{key} must be a string.", param=f"{part_param}.{key}"
                )
            texts.append(text)
    return "\n".join(texts), tuple(files)


def _image(part: dict[str, Any], param: str) -> FileRef:
    if part.get("image_url") is None and part.get("file_id") is not None:
        raise BadRequest(
            f"{param}.file_id: uploaded file ids are not supported; send the image as "
            "image_url (an http(s) URL or a data: URL).",
            param=f"{param}.file_id",
            code="unsupported_file_id",
        )
    return FileRef(file_url(part.get("image_url"), f"{param}.image_url"), kind="image")


def _file(part: dict[str, Any], param: str) -> FileRef:
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise BadRequest(f"{param}.filename must be a string.", param=f"{param}.filename")
    if part.get("file_url") is not None:
        return FileRef(file_url(part["file_url"], f"{param}.file_url"), filename=filename)
    data = part.get("file_data")
    if data is not None:
        if not isinstance(data, str) or not data.strip():
            raise BadRequest(f"{param}.file_data must be a string.", param=f"{param}.file_data")
        data = data.strip()
        if not data.startswith("data:"):  # plain base64, as OpenAI's docs show it
            data = f"data:application/octet-stream;base64,{data}"
        return FileRef(data, filename=filename)
    if part.get("file_id") is not None:
        raise BadRequest(
            f"{param}.file_id: uploaded file ids are not supported; send file_url or "
            "file_data with a filename.",
            param=f"{param}.file_id",
            code="unsupported_file_id",
        )
    raise BadRequest(f"{param} needs file_url or file_data.", param=param)


def _tool_config(raw_tools: Any, raw_choice: Any, body: dict[str, Any]) -> ToolConfig | None:
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise BadRequest("'tools' must be an array.", param="tools")
    tools = tuple(_tool(item, f"tools[{index}]") for index, item in enumerate(raw_tools or []))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise BadRequest("Two tools have the same name.", param="tools")
    choice = _tool_choice(raw_choice, names)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls")
    if not tools:
        return None
    return ToolConfig(tools=tools, choice=choice, parallel=parallel is not False)


def _tool(item: Any, param: str) -> ToolSpec:
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    if item.get("type") != "function":
        raise BadRequest(
            f"{param} has type {item.get('type')!r}; only function tools can be emulated "
            "(Kimi's web chat runs no hosted tools for a client).",
            param=f"{param}.type",
            code="unsupported_tool_type",
        )
    return read_function(item, param)


def _tool_choice(raw: Any, names: list[str]) -> ToolChoice:
    if raw is None or raw in (CHOICE_AUTO, CHOICE_NONE):
        return ToolChoice(raw or CHOICE_AUTO)
    if raw == CHOICE_REQUIRED:
        if not names:
            raise BadRequest("tool_choice 'required' needs 'tools'.", param="tool_choice")
        return ToolChoice(CHOICE_REQUIRED)
    if isinstance(raw, dict) and raw.get("type") == "function":
        name = raw.get("name")
        if name not in names:
            raise BadRequest(
                f"tool_choice.name {name!r} is not one of the tools given.",
                param="tool_choice.name",
            )
        return ToolChoice(CHOICE_FUNCTION, name)
    raise BadRequest(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}.',
        param="tool_choice",
    )


def _text_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("'text' must be an object.", param="text")
    fmt = raw.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == JSON_OBJECT:
        return ResponseFormat(JSON_OBJECT)
    if kind == "json_schema":
        return _json_schema_format(fmt, "text.format")
    raise BadRequest(
        "text.format.type must be 'text', 'json_object' or 'json_schema'.", param="text.format"
    )


def _effort(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("'reasoning' must be an object.", param="reasoning")
    effort = raw.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str):
        raise BadRequest("reasoning.effort must be a string.", param="reasoning.effort")
    return EFFORTS.get(effort, effort)


def _max_output_tokens(raw: Any) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise BadRequest(
            "'max_output_tokens' must be a positive integer.", param="max_output_tokens"
        )
    return raw
