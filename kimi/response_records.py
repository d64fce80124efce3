"""Stored responses (``store: true``): the response object and the kept Kimi chat behind it.

A later request names a response in ``previous_response_id`` to continue its chat, and
``GET``/``DELETE /v1/responses/{id}`` read and remove it. Records expire like conversations.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .store import StateStore

KEY_PREFIX = "response:"


@dataclass(frozen=True)
class StoredResponse:
    """One stored response: the Kimi chat it lives in, the account that chat belongs to (an
    id, never a token), who may read or continue it (``auth.key_owner``, ``""`` without API
    keys) and the response object as the client got it."""

    response_id: str
    chat_id: str
    account_id: str
    owner: str
    body: dict[str, Any]

    def call_names(self) -> dict[str, str]:
        """The function calls of the response: call id -> function name."""
        return {
            item["call_id"]: item["name"]
            for item in self.body.get("output", [])
            if item.get("type") == "function_call"
        }


class ResponseRecords:
    """Stored responses in the state store, kept for ``ttl`` seconds."""

    def __init__(self, store: StateStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    def get(self, response_id: str) -> StoredResponse | None:
        raw = self.store.get(KEY_PREFIX + response_id)
        return StoredResponse(**json.loads(raw)) if raw else None

    def save(self, record: StoredResponse) -> None:
        value = json.dumps(asdict(record), ensure_ascii=False)
        self.store.put(KEY_PREFIX + record.response_id, value, ttl=self.ttl)

    def delete(self, response_id: str) -> None:
        self.store.delete(KEY_PREFIX + response_id)
