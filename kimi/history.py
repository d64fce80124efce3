"""Turning an OpenAI ``messages`` array into the one prompt Kimi's web chat takes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# From the second turn on, the flattened history ends with this line before the newest
# message, so the model answers the newest message instead of replaying the transcript.
FOCUS_HINT = (
    "system:Answer only the latest message below; the lines above are the conversation so far."
)


@dataclass(frozen=True)
class FileRef:
    """A document or image attached to a message: an http(s) URL or a ``data:`` URL."""

    url: str
    filename: str | None = None
    kind: str = "file"  # "file" or "image"

    @property
    def name(self) -> str:
        if self.filename:
            return self.filename
        if self.url.startswith("data:"):
            return "image" if self.kind == "image" else "document"
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "document"


@dataclass(frozen=True)
class Message:
    """One chat message reduced to its role, its text and the files attached to it."""

    role: str
    content: str
    files: tuple[FileRef, ...] = ()

    @property
    def file_notes(self) -> str:
        """Attached files named in the text; their contents travel separately."""
        return "".join(f"\n[{f.kind}: {f.name}]" for f in self.files)


def flatten_history(
    messages: Sequence[Message], user_text: Callable[[str], str] = lambda text: text
) -> str:
    """One user message passes unchanged; a longer history becomes ``role:content`` lines.

    ``user_text`` rewrites the text of user messages (the legacy backend wants URLs tagged).
    """
    if len(messages) == 1 and messages[0].role == "user":
        return user_text(messages[0].content) + messages[0].file_notes
    lines = [f"{m.role}:{_text(m, user_text)}" for m in messages]
    if len(messages) > 1 and any(m.role == "assistant" for m in messages[:-1]):
        lines.insert(len(lines) - 1, FOCUS_HINT)
    return "\n".join(lines)


def _text(message: Message, user_text: Callable[[str], str]) -> str:
    content = user_text(message.content) if message.role == "user" else message.content
    return content + message.file_notes


def messages_after_last_reply(messages: Sequence[Message]) -> list[Message]:
    """What is new since the last assistant message: all a continued chat needs to be sent."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return messages[index + 1 :]
    return list(messages)
