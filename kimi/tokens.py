"""Kimi credentials: reading JWT claims and telling refresh tokens from access tokens.

Only the payload is decoded; the signature is Kimi's business, not ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Credential:
    """One Kimi account credential as the user supplied it."""

    token: str
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, token: str) -> Credential:
        return cls(token=token.strip(), claims=decode_claims(token.strip()))

    @property
    def account_id(self) -> str:
        """Stable, non-secret key for this credential in the state store."""
        return hashlib.sha256(self.token.encode("utf-8")).hexdigest()[:24]

    @property
    def label(self) -> str:
        """What logs may show: never the token itself."""
        return f"acct-{self.account_id[:8]}"

    @property
    def is_access_token(self) -> bool:
        return self.claims.get("typ") == "access"

    @property
    def expires_at(self) -> float | None:
        exp = self.claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None

    def __repr__(self) -> str:
        return f"Credential({self.label})"


def decode_claims(token: str) -> dict[str, Any]:
    """Return the JWT payload of ``token``, or ``{}`` when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def split_credentials(value: str) -> list[Credential]:
    """Split ``T1,T2,T3`` into credentials, dropping blanks and duplicates, keeping order."""
    seen: dict[str, Credential] = {}
    for token in value.split(","):
        token = token.strip()
        if token and token not in seen:
            seen[token] = Credential.parse(token)
    return list(seen.values())
