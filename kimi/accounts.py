"""Kimi accounts: choosing one per request, access tokens, rotated refresh tokens, cool-downs.

Refreshes of one account are merged into one upstream call: threads of a process wait on a
local lock, processes on the store's lock, and whoever comes second finds the fresh token.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NoUsableAccount, RateLimited, UpstreamAuthRejected
from .store import StateStore, store_lock
from .tokens import Credential
from .upstream.base import Session, TokenGrant, Upstream
from .upstream.http import stable_digits

log = logging.getLogger(__name__)

# Refresh this long before the access token's expiry, so no call goes out with a dying token.
ACCESS_TOKEN_SKEW = 60.0
REFRESH_LOCK_TTL = 60.0
REASON_RATE_LIMITED = "rate_limited"
REASON_DEAD = "token_rejected"


@dataclass(frozen=True)
class Cooldown:
    """Why and until when an account is skipped."""

    reason: str
    until: float


class Accounts:
    """The accounts a deployment knows, with their tokens kept in the state store."""

    def __init__(self, store: StateStore, upstream: Upstream, cooldown_seconds: float) -> None:
        self.store = store
        self.upstream = upstream
        self.cooldown_seconds = cooldown_seconds
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def choose(
        self, pool: Sequence[Credential], exclude: set[str], *, server_pool: bool
    ) -> Credential:
        """A usable account from ``pool``; errors say why none is usable."""
        cooldowns = {c.account_id: self.cooldown(c) for c in pool}
        ready = [c for c in pool if c.account_id not in exclude and cooldowns[c.account_id] is None]
        if ready:
            return random.choice(ready)
        # Accounts excluded after failing in this turn count too: a rate-limited one comes back.
        limited = [cd.until for cd in cooldowns.values() if cd and cd.reason == REASON_RATE_LIMITED]
        if limited:
            raise RateLimited(
                f"Every Kimi account in the pool ({len(pool)}) is rate-limited; try again later.",
                retry_after=min(limited) - time.time(),
            )
        if server_pool:
            raise NoUsableAccount("No usable Kimi account: every configured token was rejected.")
        raise UpstreamAuthRejected(
            "Kimi rejected every token given in the Authorization header; get a new one."
        )

    def session(self, credential: Credential) -> tuple[Session, bool]:
        """``(session, fresh)``: ``fresh`` is True when the token was just refreshed."""
        if credential.is_access_token:
            return self._session_from_access_token(credential), False
        cached = self._cached_grant(credential)
        if cached is not None:
            return self._session(credential, cached), False
        with self._local_lock(credential.account_id):
            with store_lock(self.store, f"refresh:{credential.account_id}", ttl=REFRESH_LOCK_TTL):
                cached = self._cached_grant(credential)
                if cached is not None:
                    return self._session(credential, cached), False
                return self._session(credential, self._refresh(credential)), True

    def invalidate(self, credential: Credential) -> None:
        """Forget the cached access token, so the next call refreshes."""
        self.store.delete(f"access:{credential.account_id}")

    def cool_down(self, credential: Credential, seconds: float, reason: str) -> None:
        until = time.time() + seconds
        self.store.put(
            f"cooldown:{credential.account_id}",
            json.dumps({"reason": reason, "until": until}),
            ttl=seconds,
        )
        log.info("Account %s cooling down for %.0fs (%s)", credential.label, seconds, reason)

    def mark_dead(self, credential: Credential) -> None:
        self.invalidate(credential)
        self.cool_down(credential, self.cooldown_seconds, REASON_DEAD)

    def cooldown(self, credential: Credential) -> Cooldown | None:
        raw = self.store.get(f"cooldown:{credential.account_id}")
        if raw is None:
            return None
        data = json.loads(raw)
        return Cooldown(reason=data["reason"], until=float(data["until"]))

    def _refresh(self, credential: Credential) -> TokenGrant:
        key = f"refresh_token:{credential.account_id}"
        current = self.store.get(key) or credential.token
        grant = self.upstream.refresh(current)
        if grant.refresh_token and grant.refresh_token != current:
            # Kimi rotated it: the old one is dead now, for every worker and after restarts.
            self.store.put(key, grant.refresh_token)
        ttl = grant.expires_at - time.time() - ACCESS_TOKEN_SKEW
        if ttl > 0:
            self.store.put(f"access:{credential.account_id}", _grant_json(grant), ttl=ttl)
        log.info("Refreshed the access token of %s", credential.label)
        return grant

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
