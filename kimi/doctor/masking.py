"""Masking tokens, cookies and ids with stable placeholders, for output and capture files.

The same value gets the same placeholder everywhere (``<chat-id-1>`` in a body, a path and a
later request alike), so a capture still reads as a conversation, and a replay can put back
values that work. Values are learnt first (JWTs anywhere, ids under id-like keys, identity
headers), then every string is scrubbed of all of them.
"""

from __future__ import annotations

import re
from typing import Any

from ..tokens import decode_claims

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A URL's query (pre-signed upload URLs carry their signature there): every value is masked.
URL_QUERY = re.compile(r"(https?://[^\s\"'<>?]*\?|^/[^\s\"'<>?]*\?)([^\s\"'<>]*)")
QUERY_VALUE = re.compile(r"=([^&]*)")
MASKED = "<masked>"
REDACTED = "<redacted>"
# Shorter values are replaced only where a whole string equals them, never inside text.
MIN_SUBSTRING = 6
# Header names compared lower-case.
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
IDENTITY_HEADERS = {
    "x-traffic-id": "user-id",
    "x-msh-device-id": "device-id",
    "x-msh-session-id": "session-id",
}
# Keys (lower-case, without "_") whose values identify a person rather than the protocol.
PERSONAL_KEYS = frozenset(
    {"username", "nickname", "realname", "phone", "mobile", "email", "avatar", "avatarurl"}
)
USER_KEYS = frozenset({"userid", "sub", "trafficid"})
GENERIC_ID_KEYS = frozenset(
    {
        "id",
        "ids",
        "parentid",
        "messageid",
        "groupid",
        "segmentid",
        "objectname",
        "refs",
        "toolcallid",
        "jti",
        "checksum",
    }
)
# Claims of a token worth keeping (masked) in a capture: enough for a replay to mint a twin.
KEPT_CLAIMS = ("typ", "sub", "device_id", "ssid")


def _normal(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def id_kind(parent: str, key: str) -> str | None:
    """What kind of id a value under ``parent.key`` is, or None when it is no id."""
    name, parent = _normal(key), _normal(parent)
    if name in USER_KEYS:
        return "user-id"
    if name in ("chatid", "chatids") or (name == "id" and parent == "chat"):
        return "chat-id"
    if name in ("fileid", "fileids") or (name == "id" and parent == "file"):
        return "file-id"
    if name == "deviceid":
        return "device-id"
    if name in ("sessionid", "ssid"):
        return "session-id"
    return "id" if name in GENERIC_ID_KEYS else None


class Masker:
    """Learns the secrets and ids of a walk, then masks them in any text or JSON."""

    def __init__(self) -> None:
        self._placeholders: dict[str, str] = {}  # value -> placeholder
        self._counts: dict[str, int] = {}
        self._claims: dict[str, dict[str, Any]] = {}  # token placeholder -> kept claims
        self._pattern: re.Pattern[str] | None = None

    # Learning

    def add(self, value: str, kind: str) -> str:
        """The placeholder of ``value``, made now (as ``<kind-N>``) if it is new."""
        if value in self._placeholders:
            return self._placeholders[value]
        self._counts[kind] = self._counts.get(kind, 0) + 1
        placeholder = f"<{kind}-{self._counts[kind]}>"
        self._placeholders[value] = placeholder
        self._pattern = None
        return placeholder

    def add_token(self, token: str) -> str:
        """A credential's placeholder, named for its type; its identity claims learnt too."""
        claims = decode_claims(token)
        typ = str(claims.get("typ") or "")
        kind = f"{typ}-token" if typ in ("access", "refresh") else ("jwt" if claims else "token")
        placeholder = self.add(token, kind)
        for claim, id_name in (("sub", "user-id"), ("device_id", "device-id")):
            if isinstance(claims.get(claim), str) and claims[claim]:
                self.add(claims[claim], id_name)
        if isinstance(claims.get("ssid"), str) and claims["ssid"]:
            self.add(claims["ssid"], "session-id")
        if placeholder not in self._claims and claims:
            self._claims[placeholder] = self._kept_claims(claims)
        return placeholder

    def learn_headers(self, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            kind = IDENTITY_HEADERS.get(name.lower())
            if kind and value:
                self.add(value, kind)
            for token in JWT.findall(value):
                self.add_token(token)

    def learn_json(self, value: Any, parent: str = "", key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self.learn_json(item, key or parent, str(name))
        elif isinstance(value, list):
            for item in value:
                self.learn_json(item, parent, key)
        elif isinstance(value, str) and value:
            for token in JWT.findall(value):
                self.add_token(token)
            kind = id_kind(parent, key)
            if kind and not JWT.fullmatch(value):
                self.add(value, kind)

    def learn_text(self, text: str) -> None:
        for token in JWT.findall(text):
            self.add_token(token)

    # Masking

    def text(self, text: str) -> str:
        """``text`` with every known value, any JWT and every URL query value masked."""
        if text in self._placeholders:
            return self._placeholders[text]
        text = JWT.sub(lambda match: self.add_token(match.group(0)), text)
        text = URL_QUERY.sub(_mask_query, text)
        pattern = self._substring_pattern()
        if pattern is None:
            return text
        return pattern.sub(lambda match: self._placeholders[match.group(0)], text)

    def json(self, value: Any, key: str = "", siblings: frozenset[str] = frozenset()) -> Any:
        """A copy of a JSON value with secrets, ids and personal fields masked."""
        if isinstance(value, dict):
            names = frozenset(_normal(str(name)) for name in value)
            return {name: self.json(item, str(name), names) for name, item in value.items()}
        if isinstance(value, list):
            return [self.json(item, key, siblings) for item in value]
        if isinstance(value, str) and value and _is_personal(key, siblings):
            return REDACTED
        return self.text(value) if isinstance(value, str) else value

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        masked = {}
        for name, value in headers.items():
            if name.lower() in SECRET_HEADERS:
                scheme, _, credential = value.partition(" ")
                if name.lower() == "authorization" and credential:
                    # One the masker did not recognise (not a JWT, never seen) is still secret.
                    placeholder = self.text(credential)
                    shown = MASKED if placeholder == credential else placeholder
                    masked[name] = f"{scheme} {shown}"
                else:
                    masked[name] = MASKED
            else:
                masked[name] = self.text(value)
        return masked

    def token_claims(self) -> dict[str, dict[str, Any]]:
        """Each token placeholder's identity claims (masked) and lifetime, for a replay."""
        return {
            placeholder: {name: self.json(value) for name, value in claims.items()}
            for placeholder, claims in self._claims.items()
        }

    def _kept_claims(self, claims: dict[str, Any]) -> dict[str, Any]:
        kept: dict[str, Any] = {name: claims[name] for name in KEPT_CLAIMS if name in claims}
        if isinstance(claims.get("exp"), (int, float)) and isinstance(
            claims.get("iat"), (int, float)
        ):
            kept["lifetime"] = claims["exp"] - claims["iat"]
        return kept

    def _substring_pattern(self) -> re.Pattern[str] | None:
        if self._pattern is None:
            values = sorted(
                (value for value in self._placeholders if len(value) >= MIN_SUBSTRING),
                key=len,
                reverse=True,
            )
            self._pattern = re.compile("|".join(map(re.escape, values))) if values else None
        return self._pattern


def _is_personal(key: str, siblings: frozenset[str]) -> bool:
    name = _normal(key)
    # A user's "name" next to their id or phone is their name, not a chat's or a model's.
    return name in PERSONAL_KEYS or (
        name == "name" and bool(siblings & (PERSONAL_KEYS | USER_KEYS))
    )


def _mask_query(match: re.Match[str]) -> str:
    return match.group(1) + QUERY_VALUE.sub(f"={MASKED}", match.group(2))
