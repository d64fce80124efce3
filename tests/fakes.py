"""A scripted in-memory ``Upstream`` for unit tests of everything above the adapters.

Each ``stream_turn`` plays the next scripted reply: events are yielded in order and an exception
in the list is raised at its place. Replies can be scripted for one account (by user) or for
whichever account comes. Every call is recorded, so tests assert on who was asked for what.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict, deque
from collections.abc import Generator
from dataclasses import dataclass

from kimi.errors import UpstreamAuthRejected
from kimi.events import ChatOpened, Event, Finish, ReplyStarted, TextDelta
from kimi.tokens import Credential
from kimi.upstream.base import Session, TokenGrant, TurnTarget

ACCESS_TOKEN_LIFETIME = 3600.0
ANY_ACCOUNT = None


@dataclass(frozen=True)
class Call:
    """One call the service made: which method, as which user, with which access token."""

    method: str  # "refresh", "stream_turn" or "delete_chat"
    user: str
    access_token: str = ""
    target: TurnTarget | None = None
    chat_id: str | None = None


def answer(
    text: str = "Hello", *, chat_id: str = "chat-1", message_id: str = "msg-1"
) -> list[Event]:
    """The events of a plain successful reply in a new chat."""
    return [ChatOpened(chat_id), ReplyStarted(message_id), TextDelta(text), Finish()]


class FakeUpstream:
    """An ``Upstream`` whose replies, refreshes and deletions are scripted by the test."""

    name = "fake"

    def __init__(self, *, rotate_refresh_tokens: bool = False) -> None:
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.calls: list[Call] = []
        self.closed_replies = 0  # replies whose generator was closed or ran to its end
        self._replies: dict[str | None, deque[list]] = defaultdict(deque)
        self._refresh_failures: dict[str, deque[Exception]] = defaultdict(deque)
        self._delete_failures: deque[Exception] = deque()
        self._users: dict[str, str] = {}  # live refresh token -> user
        self._revoked: set[str] = set()  # users whose turns Kimi rejects, however fresh the token
        self._serial = itertools.count(1)

    # Scripting

    def account(self, user: str) -> Credential:
        """A refresh-token credential for ``user``, as a client would send it."""
        token = f"refresh-{user}"
        self._users[token] = user
        return Credential.parse(token)

    def reply(self, *items: Event | Exception, user: str | None = ANY_ACCOUNT) -> None:
        """Script the next reply (for ``user`` only, or for any account)."""
        self._replies[user].append(list(items))

    def fail_refresh(self, user: str, error: Exception) -> None:
        """Make the next refresh of ``user``'s token raise ``error``."""
        self._refresh_failures[user].append(error)

    def revoke(self, user: str) -> None:
        """Reject every turn of ``user`` (refreshes still work) until ``restore``."""
        self._revoked.add(user)

    def restore(self, user: str) -> None:
        self._revoked.discard(user)

    def fail_delete(self, error: Exception) -> None:
        """Make the next ``delete_chat`` raise ``error``."""
        self._delete_failures.append(error)

    # What happened

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    @property
    def turn_users(self) -> list[str]:
        return [call.user for call in self.calls_of("stream_turn")]

    @property
    def deleted(self) -> list[str]:
        return [call.chat_id for call in self.calls_of("delete_chat")]

    # The Upstream protocol

    def refresh(self, refresh_token: str) -> TokenGrant:
        user = self._users.get(refresh_token)
        self.calls.append(Call("refresh", user or "?"))
        if user is None:
            raise UpstreamAuthRejected("Unknown or rotated refresh token.")
        if self._refresh_failures[user]:
            raise self._refresh_failures[user].popleft()
        serial = next(self._serial)
        if self.rotate_refresh_tokens:
            del self._users[refresh_token]  # Kimi kills the old one when it rotates
            refresh_token = f"refresh-{user}-{serial}"
            self._users[refresh_token] = user
        return TokenGrant(
            access_token=f"access-{user}-{serial}",
            refresh_token=refresh_token,
            expires_at=time.time() + ACCESS_TOKEN_LIFETIME,
            user_id=user,
        )

    def prepare_files(self, files: tuple) -> tuple:
        return files

    def release_files(self, files: tuple) -> None:
        self.calls.append(Call("release_files", ""))

    def stream_turn(self, session: Session, target: TurnTarget) -> Generator[Event, None, None]:
        self.calls.append(Call("stream_turn", session.user_id, session.access_token, target))
        if session.user_id in self._revoked:
            return self._play([UpstreamAuthRejected("invalid claims: token is not active")])
        script = self._replies[session.user_id] or self._replies[ANY_ACCOUNT]
        if not script:
            raise AssertionError(f"No reply scripted for {session.user_id!r}")
        return self._play(script.popleft())

    def delete_chat(self, session: Session, chat_id: str) -> None:
        self.calls.append(Call("delete_chat", session.user_id, session.access_token, None, chat_id))
        if self._delete_failures:
            raise self._delete_failures.popleft()

    def check(self, session: Session) -> bool:
        return True

    def list_models(self, session: Session) -> list[str]:
        return []

    def static_models(self) -> list[str]:
        return ["kimi"]

    def _play(self, items: list) -> Generator[Event, None, None]:
        try:
            for item in items:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed_replies += 1
