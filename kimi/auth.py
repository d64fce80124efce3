"""Who may call, and with which Kimi accounts: the Authorization header against the settings."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .errors import AuthenticationFailed, BadRequest, NoUsableAccount
from .settings import Settings
from .tokens import Credential, split_credentials


@dataclass(frozen=True)
class Pool:
    """The accounts one request may use, whether they are the server's own, and who is asking:
    ``owner`` is the hash of the caller's API key, ``""`` without API keys."""

    credentials: tuple[Credential, ...]
    server_side: bool
    owner: str = ""


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or ``""``."""
    scheme, _, token = (header or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_api_key(settings: Settings, authorization: str | None) -> str | None:
    """The caller's API key when ``API_KEYS`` is set (401 without a valid one), else None."""
    if not settings.api_keys:
        return None
    token = bearer_token(authorization)
    if not is_api_key(settings, token):
        raise AuthenticationFailed("Invalid API key: send Authorization: Bearer <one of API_KEYS>.")
    return token


def resolve_pool(settings: Settings, authorization: str | None) -> Pool:
    """The request's account pool; 401 when the caller may not use this service."""
    api_key = require_api_key(settings, authorization)
    if settings.kimi_tokens:
        return Pool(settings.kimi_tokens, server_side=True, owner=key_owner(api_key))
    if settings.api_keys:
        raise NoUsableAccount("API_KEYS is set but KIMI_TOKENS is empty: no Kimi account to use.")
    credentials = split_credentials(bearer_token(authorization))
    if not credentials:
        raise AuthenticationFailed(
            "No Kimi credentials: send Authorization: Bearer <refresh_token>[,<refresh_token>...]."
        )
    if len(credentials) > settings.max_tokens_per_header:
        raise BadRequest(
            f"The Authorization header names {len(credentials)} Kimi tokens; at most "
            f"{settings.max_tokens_per_header} are accepted (MAX_TOKENS_PER_HEADER).",
            code="too_many_tokens",
        )
    return Pool(tuple(credentials), server_side=False)


def key_owner(api_key: str | None) -> str:
    """What kept conversations record as their owner: a hash of the key, never the key."""
    if not api_key:
        return ""
    return "key-" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:24]


def is_api_key(settings: Settings, token: str) -> bool:
    """Whether ``token`` is one of ``API_KEYS`` (never true when none is set)."""
    supplied = token.encode("utf-8")
    # Compare against every key, always, so timing does not tell which key nearly matched.
    matches = [hmac.compare_digest(supplied, key.encode("utf-8")) for key in settings.api_keys]
    return any(matches)
