"""Parsing an OpenAI ``/v1/chat/completions`` body into one internal chat request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .history import Message, flatten_history, messages_after_last_reply
from .models import ModelOptions, parse_model

ROLES = ("system", "developer", "user", "assistant", "tool")
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

    @property
    def model(self) -> str:
        return self.options.name

    @property
    def latest_messages(self) -> tuple[Message, ...]:
        """Only what follows the last assistant message: what a continued chat is sent."""
        return tuple(messages_after_last_reply(list(self.messages))) or self.messages[-1:]

    @property
    def prompt(self) -> str:
        return flatten_history(list(self.messages))

    @property
    def latest_prompt(self) -> str:
        return flatten_history(list(self.latest_messages))


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat body; every problem is a ``BadRequest`` naming its field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    messages = _messages(body.get("messages"))
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
    return ChatRequest(
        options=parse_model(
            model, use_search=body.get("use_search") is True, reasoning_effort=effort
        ),
        messages=tuple(messages),
        conversation_id=conversation_id,
        keep_chat=keep_chat,
        stream=_flag(body, "stream"),
        include_usage=_include_usage(body.get("stream_options")),
    )


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    messages = [_message(item, index) for index, item in enumerate(raw)]
    if not any(m.content.strip() for m in messages):
        raise BadRequest("'messages' has no text to send.", param="messages")
    return messages


def _message(item: Any, index: int) -> Message:
    param = f"messages[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    role = item.get("role")
    if role not in ROLES:
        raise BadRequest(
            f"{param}.role must be one of {', '.join(ROLES)}; got {role!r}.", param=f"{param}.role"
        )
    return Message(role=role, content=_content(item.get("content"), f"{param}.content"))


def _content(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{param} must be a string or an array of parts.", param=param)
    texts = []
    for index, part in enumerate(content):
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type != "text":
            raise BadRequest(
                f"{param}[{index}] has type {part_type!r}; only 'text' parts are supported.",
                param=f"{param}[{index}]",
                code="unsupported_content_type",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{param}[{index}].text must be a string.", param=f"{param}[{index}]")
        texts.append(text)
    return "\n".join(texts)


def _conversation(raw: Any) -> tuple[str | None, bool]:
    """``(chat id to continue, keep the chat)``: absent or empty is a one-shot chat."""
    if raw is None or raw == "":
        return None, False
    if not isinstance(raw, str):
        raise BadRequest("'conversation_id' must be a string.", param="conversation_id")
    if raw.strip() in NEW_CONVERSATION:
        return None, True
    return raw.strip(), True


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a boolean.", param=name)
    return value


def _include_usage(stream_options: Any) -> bool:
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    return stream_options.get("include_usage") is True
