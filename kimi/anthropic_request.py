"""Parsing an Anthropic ``/v1/messages`` body into the service's one chat request.

Anthropic's content blocks become what every surface sends: text, files (images and documents
as data: or http(s) URLs), and earlier tool calls and results rendered as the call markup the
model was taught. Sampling knobs Kimi has no way to honour are accepted and ignored.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from .chat_request import ChatRequest, check_file_count, read_flag
from .errors import BadRequest
from .history import FileRef, Message
from .models import ModelOptions, parse_model
from .reasoning import REASONING_CONTENT
from .sampling import Sampling
from .settings import DEFAULT_ANTHROPIC_MODEL_MAP, MAX_FILES_PER_MESSAGE
from .tools import ToolChoice, ToolConfig, ToolSpec
from .tools.history import PriorCall, with_calls
from .tools.prompt import render_tool_result
from .tools.spec import CHOICE_AUTO, CHOICE_FUNCTION, CHOICE_NONE, CHOICE_REQUIRED

log = logging.getLogger(__name__)

ROLES = ("user", "assistant")
THINKING_ON = ("enabled", "adaptive")
THINKING_OFF = ("disabled",)
TOOL_CHOICES = {"auto": CHOICE_AUTO, "any": CHOICE_REQUIRED, "none": CHOICE_NONE}
# Blocks of earlier answers that carry nothing the model needs again.
SKIPPED_BLOCKS = ("thinking", "redacted_thinking")
# Anthropic's own tools (web search, bash, text editor...) carry a versioned type; only the
# client's custom tools can be emulated.
CUSTOM_TOOL_TYPES = (None, "custom")
MAX_TOOL_NAME = 128
TOOL_ERROR_PREFIX = "Error: "


@dataclass(frozen=True)
class MessagesRequest:
    """An Anthropic Messages request: the chat turn it runs as, and the model name it named."""

    chat: ChatRequest
    model: str  # as the client sent it: the answer names it back

    @property
    def stream(self) -> bool:
        return self.chat.stream


def parse_messages_request(
    body: Any,
    *,
    model_map: tuple[tuple[str, str], ...] = DEFAULT_ANTHROPIC_MODEL_MAP,
    max_files: int = MAX_FILES_PER_MESSAGE,
    require_max_tokens: bool = True,
) -> MessagesRequest:
    """Validate a Messages body; every problem is a ``BadRequest`` naming its field.

    ``count_tokens`` bodies have no ``max_tokens``: they pass ``require_max_tokens=False``.
    """
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a string.", param="model")
    messages = _messages(body.get("messages"), max_files)
    system = _system(body.get("system"))
    tools = _tool_config(body.get("tools"), body.get("tool_choice"))
    chat = ChatRequest(
        options=_options(map_model(model.strip(), model_map), body.get("thinking")),
        messages=(*system, *messages),
        stream=read_flag(body, "stream"),
        tools=tools,
        sampling=Sampling(
            max_tokens=_max_tokens(body.get("max_tokens"), require_max_tokens),
            stop=_stop_sequences(body.get("stop_sequences")),
        ),
        reasoning_mode=REASONING_CONTENT,  # thinking has blocks of its own here
    )
    return MessagesRequest(chat=chat, model=model.strip())


def map_model(name: str, model_map: tuple[tuple[str, str], ...]) -> str:
    """The Kimi model a client's model name runs as: the first matching glob pattern's, else
    the name itself (a Kimi name passes through)."""
    lowered = name.lower()
    return next(
        (model for pattern, model in model_map if fnmatchcase(lowered, pattern.lower())), name
    )


def _options(kimi_model: str, thinking: Any) -> ModelOptions:
    options = parse_model(kimi_model)
    reasoning_mode = options.reasoning_mode or REASONING_CONTENT
    if thinking is None:
        return replace(options, reasoning_mode=reasoning_mode)
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in THINKING_ON + THINKING_OFF:
        raise BadRequest(
            'thinking must be {"type": "enabled", "budget_tokens": N} or {"type": "disabled"}.',
            param="thinking",
        )
    return replace(options, thinking=kind in THINKING_ON, reasoning_mode=reasoning_mode)


def _system(raw: Any) -> tuple[Message, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (Message("system", raw),) if raw.strip() else ()
    if not isinstance(raw, list):
        raise BadRequest("'system' must be a string or an array of text blocks.", param="system")
    texts = [_text_block(block, f"system[{index}]") for index, block in enumerate(raw)]
    text = "\n".join(texts)
    return (Message("system", text),) if text.strip() else ()


def _messages(raw: Any, max_files: int) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    call_names: dict[str, str] = {}  # tool_use id -> tool name, for the results that follow
    messages = []
    for index, item in enumerate(raw):
        for message in _message(item, f"messages[{index}]", call_names):
            where = f"messages[{index}]"
            check_file_count(message, where, max_files, param=f"{where}.content")
            messages.append(message)
    if not any(m.content.strip() or m.files for m in messages):
        raise BadRequest("'messages' has no text to send.", param="messages")
    return messages


def _message(item: Any, param: str, call_names: dict[str, str]) -> Iterator[Message]:
    """One Anthropic message: a user turn with tool results is one ``tool`` message per
    result, then the user's own text (Anthropic puts the results first)."""
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    role = item.get("role")
    if role not in ROLES:
        raise BadRequest(
            f"{param}.role must be 'user' or 'assistant'; got {role!r}.", param=f"{param}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        yield Message(role, content)
        return
    if not isinstance(content, list):
        raise BadRequest(
            f"{param}.content must be a string or an array of blocks.", param=f"{param}.content"
        )
    parts = _Parts(role, call_names)
    for index, block in enumerate(content):
        parts.add(block, f"{param}.content[{index}]")
    yield from parts.messages()


class _Parts:
    """The blocks of one message, sorted into text, files, calls and results."""

    def __init__(self, role: str, call_names: dict[str, str]) -> None:
        self.role = role
        self.call_names = call_names
        self.texts: list[str] = []
        self.files: list[FileRef] = []
        self.calls: list[PriorCall] = []
        self.results: list[Message] = []

    def add(self, block: Any, param: str) -> None:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            self.texts.append(_text_block(block, param))
        elif kind == "image":
            self.files.append(_image(block.get("source"), f"{param}.source"))
        elif kind == "document":
            self._document(block, param)
        elif kind == "tool_use" and self.role == "assistant":
            self.calls.append(self._tool_use(block, param))
        elif kind == "tool_result" and self.role == "user":
            self.results.append(self._tool_result(block, param))
        elif kind not in SKIPPED_BLOCKS:
            raise BadRequest(
                f"{param} has type {kind!r}, which a {self.role} message cannot carry here; "
                "supported blocks are text, image, document, tool_use (assistant) and "
                "tool_result (user).",
                param=param,
                code="unsupported_content_type",
            )

    def messages(self) -> Iterator[Message]:
        yield from self.results
        text = with_calls("\n".join(self.texts), tuple(self.calls))
        if text or self.files or not self.results:
            yield Message(self.role, text, tuple(self.files))

    def _document(self, block: dict, param: str) -> None:
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "content":
            self.texts.append(_source_content(source.get("content"), f"{param}.source.content"))
            return
        title = block.get("title") if isinstance(block.get("title"), str) else None
        self.files.append(_document(source, f"{param}.source", title))

    def _tool_use(self, block: dict, param: str) -> PriorCall:
        call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{param}.name must be a non-empty string.", param=f"{param}.name")
        if call_id is not None and not isinstance(call_id, str):
            raise BadRequest(f"{param}.id must be a string.", param=f"{param}.id")
        if not isinstance(arguments, dict):
            raise BadRequest(f"{param}.input must be an object.", param=f"{param}.input")
        if call_id:
            self.call_names[call_id] = name
        return PriorCall(call_id, name, arguments)

    def _tool_result(self, block: dict, param: str) -> Message:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(
                f"{param}.tool_use_id must be a non-empty string.", param=f"{param}.tool_use_id"
            )
        raw = block.get("content")
        inner = _Parts("user", self.call_names)
        if isinstance(raw, str):
            inner.texts.append(raw)
        elif isinstance(raw, list):
            for index, item in enumerate(raw):
                inner.add(item, f"{param}.content[{index}]")
        elif raw is not None:
            raise BadRequest(
                f"{param}.content must be a string or an array of blocks.",
                param=f"{param}.content",
            )
        text = "\n".join(inner.texts)
        if block.get("is_error") is True:
            text = TOOL_ERROR_PREFIX + text
        content = render_tool_result(text, name=self.call_names.get(call_id), call_id=call_id)
        return Message("tool", content, tuple(inner.files))


def _text_block(block: Any, param: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise BadRequest(f"{param} must be a text block.", param=param)
    text = block.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"{param}.text must be a string.", param=f"{param}.text")
    return text


def _image(source: Any, param: str) -> FileRef:
    return FileRef(_source_url(source, param), kind="image")


def _document(source: Any, param: str, title: str | None) -> FileRef:
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise BadRequest(f"{param}.data must be a string.", param=f"{param}.data")
        encoded = base64.b64encode(data.encode("utf-8")).decode("ascii")
        return FileRef(f"data:text/plain;charset=utf-8;base64,{encoded}", filename=title)
    return FileRef(_source_url(source, param), filename=title)


def _source_url(source: Any, param: str) -> str:
    """A ``base64`` source as a data: URL, or a ``url`` source's URL."""
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise BadRequest(f"{param} needs a media_type and base64 data.", param=param)
        return f"data:{media_type};base64,{data}"
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
            raise BadRequest(f"{param}.url must be an http(s) URL.", param=f"{param}.url")
        return url.strip()
    raise BadRequest(
        f"{param} has type {kind!r}; supported sources are 'base64' and 'url' (uploaded file "
        "ids are not).",
        param=param,
    )


def _source_content(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{param} must be a string or text blocks.", param=param)
    return "\n".join(_text_block(block, f"{param}[{i}]") for i, block in enumerate(content))


def _tool_config(raw_tools: Any, raw_choice: Any) -> ToolConfig | None:
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise BadRequest("'tools' must be an array.", param="tools")
    tools = tuple(
        tool
        for index, item in enumerate(raw_tools or [])
        if (tool := _tool(item, f"tools[{index}]")) is not None
    )
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise BadRequest("Two tools have the same name.", param="tools")
    choice, parallel = _tool_choice(raw_choice, names)
    return ToolConfig(tools=tools, choice=choice, parallel=parallel) if tools else None


def _tool(item: Any, param: str) -> ToolSpec | None:
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    if item.get("type") not in CUSTOM_TOOL_TYPES:
        # Claude Code offers some of these; leaving them out keeps the rest usable.
        log.info(
            "Leaving out Anthropic's own tool %r: only custom tools are emulated", item["type"]
        )
        return None
    name = item.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_TOOL_NAME:
        raise BadRequest(f"{param}.name must be a non-empty string.", param=f"{param}.name")
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"{param}.description must be a string.", param=f"{param}.description")
    schema = item.get("input_schema")
    if not isinstance(schema, dict):
        raise BadRequest(
            f"{param}.input_schema must be a JSON schema object.", param=f"{param}.input_schema"
        )
    return ToolSpec(name, description or "", schema)


def _tool_choice(raw: Any, names: list[str]) -> tuple[ToolChoice, bool]:
    """The choice, and whether several calls may come in one answer."""
    if raw is None:
        return ToolChoice(), True
    kind = raw.get("type") if isinstance(raw, dict) else None
    parallel = not (isinstance(raw, dict) and raw.get("disable_parallel_tool_use") is True)
    if isinstance(kind, str) and kind in TOOL_CHOICES:  # a list or object is unhashable
        return ToolChoice(TOOL_CHOICES[kind]), parallel
    if kind == "tool":
        name = raw.get("name")
        if name not in names:
            raise BadRequest(
                f"tool_choice.name {name!r} is not one of the tools given.",
                param="tool_choice.name",
            )
        return ToolChoice(CHOICE_FUNCTION, name), parallel
    raise BadRequest(
        "tool_choice.type must be 'auto', 'any', 'tool' or 'none'.", param="tool_choice"
    )


def _max_tokens(raw: Any, required: bool) -> int | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise BadRequest("max_tokens: a positive integer is required.", param="max_tokens")
    return raw


def _stop_sequences(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
        raise BadRequest(
            "'stop_sequences' must be an array of non-empty strings.", param="stop_sequences"
        )
    return tuple(dict.fromkeys(raw))
