"""Which account owns each kept Kimi chat, and the message the next turn continues from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .store import StateStore


@dataclass(frozen=True)
class Conversation:
    """A kept chat: its owner (an account id, never a token) and its last assistant message."""

    chat_id: str
    account_id: str
    parent_id: str


class Conversations:
    """Conversation records in the state store, kept for ``ttl`` seconds after last use."""

    def __init__(self, store: StateStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    def get(self, chat_id: str) -> Conversation | None:
        raw = self.store.get(f"conversation:{chat_id}")
        return Conversation(**json.loads(raw)) if raw else None

    def save(self, conversation: Conversation) -> None:
        self.store.put(
            f"conversation:{conversation.chat_id}", json.dumps(asdict(conversation)), ttl=self.ttl
        )
