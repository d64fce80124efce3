"""Minting and checking the emulator's JWTs (HS256 with a per-emulator secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

ISSUER = "kimi-emulator"
REFRESH_TTL = 90 * 24 * 3600  # the real web client's refresh tokens last about 90 days
DEFAULT_ACCESS_TTL = 900  # and its access tokens about 15 minutes
_HEADER = {"alg": "HS256", "typ": "JWT"}
_CLAIM_NAMES = ("sub", "typ", "iat", "exp", "jti", "device_id", "ssid")


class TokenError(ValueError):
    """A token that is malformed, forged, expired, revoked or of the wrong type."""


@dataclass(frozen=True)
class TokenClaims:
    """The payload fields the emulator reads back from a token."""

    sub: str
    typ: str
    iat: int
    exp: int
    jti: str
    device_id: str
    ssid: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies tokens with one secret; a new signer invalidates every old token."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def mint(self, user_id: str, typ: str, ttl: float, device_id: str, ssid: str) -> TokenClaims:
        """Claims for a new token of type ``typ`` living ``ttl`` seconds."""
        now = time.time()
        return TokenClaims(
            sub=user_id,
            typ=typ,
            iat=int(now),
            exp=max(int(now + ttl), int(now) + 1),
            jti=uuid.uuid4().hex,
            device_id=device_id,
            ssid=ssid,
        )

    def encode(self, claims: TokenClaims) -> str:
        """The signed compact JWT for ``claims``."""
        payload = {"iss": ISSUER, **claims.__dict__}
        signing_input = ".".join(_b64encode(_compact_json(part)) for part in (_HEADER, payload))
        return f"{signing_input}.{_b64encode(self._sign(signing_input))}"

    def decode(self, token: str, typ: str) -> TokenClaims:
        """Verify signature, issuer, type and expiry; raise ``TokenError`` naming the cause."""
        payload = self._verified_payload(token)
        if payload.get("iss") != ISSUER:
            raise TokenError("invalid claims: wrong issuer")
        if payload.get("typ") != typ:
            raise TokenError(f"invalid claims: token type is not {typ}")
        try:
            claims = TokenClaims(**{name: payload[name] for name in _CLAIM_NAMES})
        except KeyError as exc:
            raise TokenError(f"invalid claims: missing {exc.args[0]}") from exc
        if not isinstance(claims.exp, int) or claims.exp <= time.time():
            raise TokenError("invalid claims: token is expired")
        return claims

    def _verified_payload(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        signing_input = f"{parts[0]}.{parts[1]}"
        try:
            signature = _b64decode(parts[2])
            payload = json.loads(_b64decode(parts[1]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenError("malformed token") from exc
        if not hmac.compare_digest(signature, self._sign(signing_input)):
            raise TokenError("invalid signature")
        if not isinstance(payload, dict):
            raise TokenError("malformed token")
        return payload

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._secret, signing_input.encode("utf-8"), hashlib.sha256).digest()
