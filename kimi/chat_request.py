"""Parsing an OpenAI ``/v1/chat/completions`` body into one internal chat request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .history import FileRef, Message, flatten_history, messages_after_last_reply
from .models import ModelOptions, parse_model
from .reasoning import DEFAULT_REASONING_MODE
from .sampling import Sampling, parse_sampling
from .settings import MAX_FILES_PER_MESSAGE
from .structured import ResponseFormat, format_instructions, parse_response_format
from .tools import ToolConfig, parse_tool_config, tool_instructions
from .tools.history import read_prior_calls, tool_result, with_calls

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
NEW_CONVERSATION = ("none", "None")


@dataclass(frozen=True)
class ChatRequest:
    """One chat turn as the service understands it, independent of the upstream protocol."""

    options: ModelOptions
    messages: tuple[Message, ...]  # the whole history: what a new chat is sent
    conversation_id: str | None = None  # an existing chat to continue
    keep_chat: bool = False  # False: a one-shot chat, deleted upstream after the answer
    stream: bool = False
    include_usage: bool = False
    tools: ToolConfig | None = None
    response_format: ResponseFormat | None = None
    sampling: Sampling = Sampling()
    reasoning_mode: str = DEFAULT_REASONING_MODE
    # The client sees the Kimi chat's id in its answer (chat completions: each chunk's id);
    # the Responses surface shows its own ids instead.
    shows_chat_id: bool = True

    @property
    def model(self) -> str:
        return self.options.name

    @property
    def keeps_unfinished_chat(self) -> bool:
        """Whether a new kept chat stays on the account when its answer fails after it started:
        only when the client was given the chat's id to go on with (a chat completions stream).
        Any other such chat could never be reached again."""
        return self.keep_chat and self.stream and self.shows_chat_id

    @property
    def instructions(self) -> Message | None:
        """The emulated functions and the answer format, as a system message for every turn."""
        parts = []
        if self.tools is not None:
            parts.append(tool_instructions(self.tools))
        if self.response_format is not None:
            parts.append(format_instructions(self.response_format))
        return Message("system", "\n\n".join(parts)) if parts else None

    def outgoing_messages(self, *, continuing: bool) -> tuple[Message, ...]:
        """What this turn sends: the history (or only what is new in a continued chat), with
        the instructions first, since a continued chat would otherwise lose them."""
        messages = self.latest_messages if continuing else self.messages
        instructions = self.instructions
        return (instructions, *messages) if instructions else messages

    @property
    def latest_messages(self) -> tuple[Message, ...]:
        """Only what follows the last assistant message: what a continued chat is sent."""
        return tuple(messages_after_last_reply(list(self.messages))) or self.messages[-1:]

    @property
    def files(self) -> tuple[FileRef, ...]:
        """The files of the latest turn (every message after the last assistant message, such
        as several tool results with a screenshot each): the ones sent upstream. Earlier ones
        are only named in the history."""
        return tuple(file for message in self.latest_messages for file in message.files)

    @property
    def prompt(self) -> str:
        """The whole prompt of a new chat: what ``usage`` counts."""
        return flatten_history(list(self.outgoing_messages(continuing=False)))

    @property
    def latest_prompt(self) -> str:
        """The prompt of a continued chat: only what is new since the last reply."""
        return flatten_history(list(self.outgoing_messages(continuing=True)))


def parse_chat_request(
    body: Any,
    *,
    max_files: int = MAX_FILES_PER_MESSAGE,
    reasoning_mode: str = DEFAULT_REASONING_MODE,
) -> ChatRequest:
    """Validate an OpenAI chat body; every problem is a ``BadRequest`` naming its field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    messages = _messages(body.get("messages"), max_files)
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise BadRequest("Only n=1 is supported: Kimi answers once per turn.", param="n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string.", param="model")
    effort = body.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise BadRequest("'reasoning_effort' must be a string.", param="reasoning_effort")
    conversation_id, keep_chat = _conversation(body.get("conversation_id"))
    options = parse_model(model, use_search=body.get("use_search") is True, reasoning_effort=effort)
    return ChatRequest(
        options=options,
        messages=tuple(messages),
        conversation_id=conversation_id,
        keep_chat=keep_chat,
        stream=read_flag(body, "stream"),
        include_usage=_include_usage(body.get("stream_options")),
        tools=parse_tool_config(body),
        response_format=parse_response_format(body),
        sampling=parse_sampling(body),
        reasoning_mode=options.reasoning_mode or reasoning_mode,
    )


def _messages(raw: Any, max_files: int) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    call_names: dict[str, str] = {}  # call id -> function name, for the tool messages after
    messages = [_message(item, index, call_names) for index, item in enumerate(raw)]
    for index, message in enumerate(messages):
        check_file_count(
            message, f"messages[{index}]", max_files, param=f"messages[{index}].content"
        )
    if not any(m.content.strip() or m.files for m in messages):
        raise BadRequest("'messages' has no text to send.", param="messages")
    return messages


def _message(item: Any, index: int, call_names: dict[str, str]) -> Message:
    param = f"messages[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    role = item.get("role")
    if role not in ROLES:
        raise BadRequest(
            f"{param}.role must be one of {', '.join(ROLES)}; got {role!r}.", param=f"{param}.role"
        )
    content, files = _content(item.get("content"), f"{param}.content")
    if role == "assistant":
        calls = read_prior_calls(item, param)
        call_names.update((call.call_id, call.name) for call in calls if call.call_id)
        content = with_calls(content, calls)
    elif role in ("tool", "function"):
        role, content = "tool", tool_result(item, content, call_names, param)
    return Message(role=role, content=content, files=files)


def _content(content: Any, param: str) -> tuple[str, tuple[FileRef, ...]]:
    if content is None:
        return "", ()
    if isinstance(content, str):
        return content, ()
    if not isinstance(content, list):
        raise BadRequest(f"{param} must be a string or an array of parts.", param=param)
    texts, files = [], []
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"{part_param}.text must be a string.", param=part_param)
            texts.append(text)
        elif part_type in ("file", "image_url"):
            files.append(_file_part(part, part_param))
        else:
            raise BadRequest(
                f"{part_param} has type {part_type!r}; supported parts are 'text', "
                "'image_url' and 'file'.",
                param=part_param,
                code="unsupported_content_type",
            )
    return "\n".join(texts), tuple(files)


def _file_part(part: dict, param: str) -> FileRef:
    """The three shapes: ``file.file_url.url``, ``image_url.url``, ``file.file.file_data``."""
    if part["type"] == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return FileRef(file_url(url, param), kind="image")
    if isinstance(part.get("file_url"), dict):
        return FileRef(file_url(part["file_url"].get("url"), param))
    file = part.get("file") if isinstance(part.get("file"), dict) else {}
    filename = file.get("filename") if isinstance(file.get("filename"), str) else None
    if file.get("file_data") is not None:
        return FileRef(file_url(file["file_data"], param), filename=filename)
    raise BadRequest(
        f"{param} needs file_url.url or file.file_data (uploaded file ids are not supported).",
        param=param,
    )


def check_file_count(message: Message, where: str, max_files: int, *, param: str = "") -> None:
    """A 400 when one message carries more than ``max_files`` files (every front door's rule)."""
    if len(message.files) > max_files:
        raise BadRequest(
            f"{where} has {len(message.files)} files; at most {max_files} are allowed in one "
            "message.",
            param=param or where,
            code="too_many_files",
        )


def file_url(value: Any, param: str) -> str:
    """An attached file's http(s) or ``data:`` URL, stripped; a 400 naming ``param`` else."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{param} has no URL.", param=param)
    value = value.strip()
    if not value.startswith(("http://", "https://", "data:")):
        raise BadRequest(f"{param} must be an http(s) URL or a data: URL.", param=param)
    return value


def _conversation(raw: Any) -> tuple[str | None, bool]:
    """``(chat id to continue, keep the chat)``: absent or empty is a one-shot chat."""
    if raw is None or raw == "":
        return None, False
    if not isinstance(raw, str):
        raise BadRequest("'conversation_id' must be a string.", param="conversation_id")
    if raw.strip() in NEW_CONVERSATION:
        return None, True
    return raw.strip(), True


def read_flag(body: dict, name: str, *, default: bool = False) -> bool:
    """A boolean body field (absent or null: ``default``); a 400 for anything else."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a boolean.", param=name)
    return value


def _include_usage(stream_options: Any) -> bool:
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    return stream_options.get("include_usage") is True
