"""The one interface every upstream adapter (``web``, ``legacy``) implements."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import UpstreamError
from ..events import Event
from ..history import FileRef, Message
from ..models import ModelOptions
from ..tokens import decode_claims


@dataclass(frozen=True)
class TokenGrant:
    """A usable access token, and the refresh token to use next time (they may rotate)."""

    access_token: str
    refresh_token: str | None
    expires_at: float
    user_id: str = ""


def grant_from_refresh(
    access_token: Any, refresh_token: str, *, default_lifetime: float
) -> TokenGrant:
    """The grant a refresh answered; expiry and user id from the access token's claims."""
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamError("Kimi's token refresh answered without an access token.")
    claims = decode_claims(access_token)
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=float(claims.get("exp") or time.time() + default_lifetime),
        user_id=str(claims.get("sub") or ""),
    )


@dataclass(frozen=True)
class Session:
    """What a call needs to act as one account: its access token and identity."""

    access_token: str
    user_id: str = ""
    device_id: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class TurnTarget:
    """Where a turn goes: a new chat (``chat_id`` None) or after ``parent_id`` in a chat.

    ``messages`` are what to send: the whole history for a new chat, only the new messages
    when continuing. Each adapter flattens them the way its protocol wants.
    """

    messages: tuple[Message, ...]
    options: ModelOptions
    files: tuple = ()  # what prepare_files made of the latest message's files
    chat_id: str | None = None
    parent_id: str | None = None


class Upstream(Protocol):
    """A Kimi backend generation. Methods raise ``KimiError`` subclasses on failure."""

    name: str
    # Whether a refresh kills the refresh token it used (web: yes). A check must not refresh one.
    rotates_refresh_tokens: bool

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token for an access token (and maybe a new refresh token)."""
        ...

    def prepare_files(self, files: tuple[FileRef, ...]) -> tuple:
        """Fetch and check the latest message's files once per turn, before any chat call."""
        ...

    def release_files(self, files: tuple) -> None:
        """Free what ``prepare_files`` holds (open downloads, temporary files)."""
        ...

    def stream_turn(self, session: Session, target: TurnTarget) -> Generator[Event, None, None]:
        """Send one user turn and yield its events; ``ChatOpened`` comes before any text."""
        ...

    def delete_chat(self, session: Session, chat_id: str) -> None: ...

    def check(self, session: Session) -> bool:
        """True when the account behind ``session`` is alive."""
        ...

    def list_models(self, session: Session) -> list[str]:
        """Model ids from the live catalog."""
        ...

    def static_models(self) -> list[str]:
        """Model ids to publish when the live catalog cannot be read."""
        ...
