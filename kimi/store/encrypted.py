"""Tokens at rest: values encrypted with Fernet (``STATE_ENCRYPTION_KEY``) before a store sees them.

Whoever reads the SQLite file, a backup of it or the Redis keys then finds no usable Kimi token
without the key as well. The key lives in the service's environment, never in the store.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import StateStoreUnavailable
from . import StateStore

# Every Fernet token starts so: the version byte 0x80 and the high bytes of a timestamp.
FERNET_TOKEN_START = "gAAAAA"


class EncryptedStore:
    """A ``StateStore`` around another: ``put`` encrypts, ``get`` decrypts.

    ``keys`` is one Fernet key or several, comma-separated: the first encrypts, every one
    decrypts, so a key is rotated by putting the new one first. Values written before encryption
    was turned on are read as they are and encrypted when next written. ``compare_and_set``
    stores its values as given: they are lock owners, compared exactly, and a randomized
    cipher text never compares equal.
    """

    def __init__(self, inner: StateStore, keys: str) -> None:
        self.inner = inner
        self._fernet = MultiFernet(_fernets(keys))

    def get(self, key: str) -> str | None:
        value = self.inner.get(key)
        if value is None or not value.startswith(FERNET_TOKEN_START):
            return value
        try:
            return self._fernet.decrypt(value.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise StateStoreUnavailable(
                "The state store holds a value that STATE_ENCRYPTION_KEY cannot decrypt (was the "
                "key changed? list the old key after the new one)."
            ) from exc

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        token = self._fernet.encrypt(value.encode("utf-8")).decode("ascii")
        self.inner.put(key, token, ttl)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        return self.inner.compare_and_set(key, expected, value, ttl)

    def ping(self) -> bool:
        return self.inner.ping()

    def describe(self) -> str:
        return f"{self.inner.describe()} (encrypted)"


def _fernets(keys: str) -> list[Fernet]:
    try:
        fernets = [Fernet(key.strip()) for key in keys.split(",") if key.strip()]
    except ValueError as exc:  # binascii.Error is one too
        raise ValueError(
            "STATE_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes each, as "
            "Fernet.generate_key() makes them), comma-separated"
        ) from exc
    if not fernets:
        raise ValueError("STATE_ENCRYPTION_KEY holds no key")
    return fernets
