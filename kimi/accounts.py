"""Kimi accounts: access tokens, rotated refresh tokens, and the pool that chooses among them.

Refreshes of one account are merged into one upstream call: threads of a process wait on a
local lock, processes on the store's lock, and whoever comes second finds the fresh token.
Choosing an account per turn, cool-downs and failures live in ``pool.AccountPool``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import StateStoreUnavailable, UpstreamAuthRejected
from .pool import AccountPool
from .settings import LEASE_SECONDS, MAX_CONCURRENT_PER_ACCOUNT
from .store import StateStore, retry_in_background, store_lock
from .tokens import Credential, decode_claims
from .upstream.base import Session, TokenGrant, Upstream
from .upstream.http import stable_digits

log = logging.getLogger(__name__)

# Refresh this long before the access token's expiry, so no call goes out with a dying token.
ACCESS_TOKEN_SKEW = 60.0
REFRESH_LOCK_TTL = 60.0
# Once Kimi hands out a rotated refresh token the old one is dead: a store that fails to take the
# new one is asked again this often, for this long, while the refresh lock is still held (well
# within its ttl, so no other worker refreshes meanwhile)...
ROTATION_SAVE_SECONDS = 10.0
ROTATION_SAVE_RETRY_SECONDS = 0.5
# ...and after that, this process keeps the token and writes it as soon as the store answers.
ROTATION_SAVE_LATER_SECONDS = 1.0


def _rotated_key(account_id: str) -> str:
    """Where the refresh token Kimi rotated an account to is stored."""
    return f"refresh_token:{account_id}"


class Accounts:
    """The accounts a deployment knows, with their tokens kept in the state store."""

    def __init__(
        self,
        store: StateStore,
        upstream: Upstream,
        *,
        max_concurrent: int = MAX_CONCURRENT_PER_ACCOUNT,
        wait_seconds: float = 0.0,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.pool = AccountPool(
            store,
            max_concurrent=max_concurrent,
            wait_seconds=wait_seconds,
            lease_seconds=lease_seconds,
            clock=clock,
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Rotated refresh tokens the store has not taken yet, by account id.
        self._unsaved: dict[str, str] = {}

    def session(self, credential: Credential) -> tuple[Session, bool]:
        """``(session, fresh)``: ``fresh`` is True when the token was just refreshed."""
        if credential.is_access_token:
            return self._session_from_access_token(credential), False
        cached = self._cached_grant(credential)
        if cached is not None:
            return self._session(credential, cached), False
        with self._refresh_lock(credential):
            cached = self._cached_grant(credential)
            if cached is not None:
                return self._session(credential, cached), False
            return self._session(credential, self._refresh(credential)), True

    def refresh_now(self, credential: Credential) -> tuple[Session, TokenGrant]:
        """Refresh even while a cached access token is good, storing a rotated refresh token
        like any refresh (``python -m kimi doctor`` tests the refresh itself)."""
        with self._refresh_lock(credential):
            grant = self._refresh(credential)
        return self._session(credential, grant), grant

    @contextlib.contextmanager
    def _refresh_lock(self, credential: Credential) -> Iterator[None]:
        """One refresh of this account at a time: in this process, then across its workers and
        instances (a rotated refresh token may be spent only once)."""
        account_id = credential.account_id
        with self._local_lock(account_id):
            with store_lock(self.store, f"refresh:{account_id}", ttl=REFRESH_LOCK_TTL):
                yield

    def has_rotated_token(self, credential: Credential) -> bool:
        """Whether a refresh token Kimi rotated to is stored for this credential."""
        return self._rotated(credential) is not None

    def token_claims(self, credential: Credential) -> dict[str, Any]:
        """The JWT claims of the account's current token (the rotated refresh token when Kimi
        rotated it), for the status page's token age: never the token itself."""
        if credential.is_access_token:
            return credential.claims
        rotated = self._rotated(credential)
        return decode_claims(rotated) if rotated else credential.claims

    def invalidate(self, credential: Credential) -> None:
        """Forget the cached access token, so the next call refreshes."""
        self.store.delete(f"access:{credential.account_id}")

    def _rotated(self, credential: Credential) -> str | None:
        """The refresh token Kimi rotated this account to, if it did: one this process could
        not store yet, else the stored one."""
        account_id = credential.account_id
        return self._unsaved.get(account_id) or self.store.get(_rotated_key(account_id))

    def _refresh(self, credential: Credential) -> TokenGrant:
        current = self._rotated(credential) or credential.token
        grant = self.upstream.refresh(current)
        if grant.refresh_token and grant.refresh_token != current:
            # Kimi rotated it: the old one is dead now, for every worker and after restarts.
            self._save_rotated(credential, grant.refresh_token)
        ttl = grant.expires_at - time.time() - ACCESS_TOKEN_SKEW
        if ttl > 0:
            self.store.put(f"access:{credential.account_id}", _grant_json(grant), ttl=ttl)
        self.pool.refreshed(credential)
        log.info("Refreshed the access token of %s", credential.label)
        return grant

    def _save_rotated(self, credential: Credential, token: str) -> None:
        """Store the rotated refresh token, the account's only credential from now on; a store
        that fails is waited for a while, then the token is kept here and written later."""
        deadline = time.monotonic() + ROTATION_SAVE_SECONDS
        while True:
            try:
                self.store.put(_rotated_key(credential.account_id), token)
            except StateStoreUnavailable:
                if time.monotonic() < deadline:
                    time.sleep(ROTATION_SAVE_RETRY_SECONDS)
                    continue
                self._unsaved[credential.account_id] = token
                self._save_later(credential, token)
                raise
            self._unsaved.pop(credential.account_id, None)
            return

    def _save_later(self, credential: Credential, token: str) -> None:
        log.error(
            "Could not store the rotated refresh token of %s: this process keeps it and stores "
            "it once the state store answers (other instances meanwhile hold a dead one)",
            credential.label,
        )

        def save() -> bool:
            # Under the account's lock: a refresh made meanwhile wrote a newer token.
            with self._local_lock(credential.account_id):
                if self._unsaved.get(credential.account_id) != token:
                    return False
                self.store.put(_rotated_key(credential.account_id), token)
                del self._unsaved[credential.account_id]
            return True

        retry_in_background(
            save,
            every=ROTATION_SAVE_LATER_SECONDS,
            until=math.inf,
            name="kimi-rotation-save",
            done=f"Stored the rotated refresh token of {credential.label} at last",
            level=logging.WARNING,
        )

    def _cached_grant(self, credential: Credential) -> TokenGrant | None:
        raw = self.store.get(f"access:{credential.account_id}")
        if raw is None:
            return None
        data = json.loads(raw)
        return TokenGrant(data["access_token"], None, data["expires_at"], data.get("user_id", ""))

    def _session_from_access_token(self, credential: Credential) -> Session:
        expires_at = credential.expires_at
        if expires_at is not None and expires_at <= time.time():
            raise UpstreamAuthRejected(
                "This Kimi access token has expired; give a refresh token for long-lived use."
            )
        grant = TokenGrant(
            credential.token, None, expires_at or 0.0, str(credential.claims.get("sub", ""))
        )
        return self._session(credential, grant)

    def _session(self, credential: Credential, grant: TokenGrant) -> Session:
        claims = credential.claims
        return Session(
            access_token=grant.access_token,
            user_id=grant.user_id or str(claims.get("sub", "")),
            device_id=str(
                claims.get("device_id") or stable_digits("device" + credential.account_id)
            ),
            session_id=str(claims.get("ssid") or stable_digits("session" + credential.account_id)),
        )

    def _local_lock(self, account_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(account_id, threading.Lock())


def _grant_json(grant: TokenGrant) -> str:
    return json.dumps(
        {
            "access_token": grant.access_token,
            "expires_at": grant.expires_at,
            "user_id": grant.user_id,
        }
    )
