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
class Message:
    """One chat message reduced to its role and its text."""

    role: str
    content: str


def flatten_history(
    messages: Sequence[Message], user_text: Callable[[str], str] = lambda text: text
) -> str:
    """One user message passes unchanged; a longer history becomes ``role:content`` lines.

    ``user_text`` rewrites the text of user messages (the legacy backend wants URLs tagged).
    """
    if len(messages) == 1 and messages[0].role == "user":
        return user_text(messages[0].content)
    lines = [
        f"{m.role}:{user_text(m.content) if m.role == 'user' else m.content}" for m in messages
    ]
    if len(messages) > 1 and any(m.role == "assistant" for m in messages[:-1]):
        lines.insert(len(lines) - 1, FOCUS_HINT)
    return "\n".join(lines)


def messages_after_last_reply(messages: Sequence[Message]) -> list[Message]:
    """What is new since the last assistant message: all a continued chat needs to be sent."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return messages[index + 1 :]
    return list(messages)
