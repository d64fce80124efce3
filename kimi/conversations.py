"""Which account owns each kept Kimi chat, and the message the next turn continues from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .store import StateStore


@dataclass(frozen=True)
class Conversation:
    """A kept chat: the account it lives in (an id, never a token), its last assistant message,
    and who may continue it: the hash of the API key that made it, or ``""`` when the caller's
    own tokens (or a public pool) made it and the account alone decides."""

    chat_id: str
    account_id: str
    parent_id: str
    owner: str = ""


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
