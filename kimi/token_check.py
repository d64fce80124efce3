"""``POST /token/check``: whether Kimi accepts a token, asked without spending or keeping it.

A check must never change the token it was asked about. Refreshing a ``web`` refresh token
rotates it (Kimi answers with a new one and the old one stops working), so checking one that
way would kill it for its owner wherever else it is used. What each kind of token gets:

- an access token (JWT ``typ`` = access, the ``kimi-auth`` cookie): read the account with it
  (``GetSubscription`` / ``/api/user``), which changes nothing;
- a refresh token, on a protocol whose refresh does not rotate (``legacy``): refreshed once,
  and the answer thrown away;
- a refresh token, on a protocol that rotates (``web``): not checked (``live`` is ``null``)
  unless its own ``exp`` says it has expired. Using it in a chat is the real test: the service
  keeps the rotated token, so the caller's copy goes on working here.

A string that is not a JWT is no Kimi token of either generation: ``live`` is false without a
call. Nothing is written to the state store either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .accounts import Accounts
from .errors import UpstreamAuthRejected
from .tokens import Credential
from .upstream.base import Upstream

NOT_CHECKED = (
    "Not checked: refreshing a refresh token on this protocol rotates it, and the copy you hold "
    "would stop working. Check an access token (the kimi-auth cookie) instead, or use this one "
    "in a chat: this service keeps the rotated token for you."
)


@dataclass(frozen=True)
class TokenCheck:
    """The answer: ``live`` is ``None`` when the token could not be checked without harm."""

    live: bool | None
    token_type: str  # "access", "refresh" or "unknown" (not a JWT)
    message: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "live": self.live,
            "checked": self.live is not None,
            "token_type": self.token_type,
        }
        if self.message:
            body["message"] = self.message
        return body


def check_token(token: str, accounts: Accounts, upstream: Upstream) -> TokenCheck:
    """Ask Kimi about ``token`` in a way that neither rotates nor stores it."""
    credential = Credential.parse(token)
    if not credential.claims:
        return TokenCheck(False, "unknown", "Not a Kimi token: Kimi's tokens are JWTs.")
    kind = "access" if credential.is_access_token else "refresh"
    expires_at = credential.expires_at
    if expires_at is not None and expires_at <= time.time():
        return TokenCheck(False, kind, "The token's own expiry (exp) has passed.")
    try:
        if credential.is_access_token:
            session, _ = accounts.session(credential)  # an access token is used as it is
            return TokenCheck(upstream.check(session), kind)
        if upstream.rotates_refresh_tokens:
            return TokenCheck(None, kind, NOT_CHECKED)
        upstream.refresh(credential.token)  # the old token stays valid; the new pair is dropped
        return TokenCheck(True, kind)
    except UpstreamAuthRejected:
        return TokenCheck(False, kind)
