"""Which account serves a turn: the least recently used available one, within its turn cap.

Every turn holds a slot (a lease in the account's ``AccountHealth`` record) from the moment its
account is chosen until the turn is closed. A lease runs out by itself after ``lease_seconds``
(``KIMI_LEASE_SECONDS``) unless the turn renews it, so a worker or a whole instance that died
mid-turn does not hold a slot for ever.
Only the server's own pool (``KIMI_TOKENS``) is capped: callers' own tokens are theirs to use
as they like; turns are counted on any pool that has a choice to make.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from . import metrics
from .account_health import AccountHealth, HealthBook
from .errors import (
    KimiError,
    NoUsableAccount,
    RateLimited,
    ResearchQuotaExhausted,
    StateStoreUnavailable,
    UpstreamAuthRejected,
)
from .settings import LEASE_SECONDS, MAX_CONCURRENT_PER_ACCOUNT
from .store import StateStore, retry_in_background
from .tokens import Credential

log = logging.getLogger(__name__)

# The default lease (LEASE_SECONDS) outlives the longest silence a turn can have
# (KIMI_READ_TIMEOUT, 120 s) plus the renewal step. A turn renews its lease while events flow,
# once a minute at most, and at least this many times per lease when the lease is short.
LEASE_RENEW_SECONDS = 60.0
LEASE_RENEWALS = 5
# A slot the store could not be told about (down or hung) is given back later: tried again this
# often until the store answers or the lease has run out by itself.
RELEASE_RETRY_SECONDS = 1.0
# What a caller is told to wait when every account is busy: a turn usually ends within that.
BUSY_RETRY_AFTER = 5.0
WAIT_POLL_SECONDS = 0.1
REASON_RATE_LIMITED = "rate_limited"
REASON_DEAD = "token_rejected"
BUSY_CODE = "accounts_busy"


@dataclass(frozen=True)
class Cooldown:
    """Why and until when an account is skipped."""

    reason: str
    until: float


@dataclass
class Checkout:
    """An account given to one turn; it holds a slot there until ``AccountPool.release``."""

    credential: Credential
    lease_id: str | None  # None when this pool's turns are not counted
    had_failures: bool  # Kimi rejected the token lately: content from it is news
    renewed_at: float  # time.monotonic() of the last lease renewal
    released: bool = False


@dataclass(frozen=True)
class _Shortage:
    """Why no account is available, and whether waiting a little could change that."""

    error: KimiError
    frees_in: float | None  # seconds until an account is expected back; None: not by waiting


class AccountPool:
    """Chooses accounts per turn and keeps what happens to them in their health records."""

    def __init__(
        self,
        store: StateStore,
        *,
        max_concurrent: int = MAX_CONCURRENT_PER_ACCOUNT,
        wait_seconds: float = 0.0,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = HealthBook(store)
        self.max_concurrent = max_concurrent
        self.wait_seconds = wait_seconds
        self.lease_seconds = lease_seconds
        self.clock = clock

    # Choosing

    def checkout(
        self,
        pool: Sequence[Credential],
        exclude: set[str] | frozenset[str] = frozenset(),
        *,
        server_pool: bool,
        research: bool = False,
    ) -> Checkout:
        """An available account of ``pool`` for one turn, waiting up to ``wait_seconds`` when
        all are busy or cooling; errors say why none is available."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            records = [self.book.read(c.account_id) for c in pool]
            ready = self._ready(pool, records, exclude, server_pool, research)
            checkout = self._take_first(ready, len(pool), server_pool, research)
            if checkout is not None:
                return checkout
            if ready:
                # Other turns (of this or another instance) took the slots these records showed
                # free: what is left is read again, not judged from the records they changed.
                continue
            shortage = self._shortage(pool, records, server_pool, research)
            remaining = deadline - time.monotonic()
            if shortage.frees_in is None or remaining <= 0 or shortage.frees_in > remaining:
                raise shortage.error
            time.sleep(min(WAIT_POLL_SECONDS, remaining))

    def release(self, checkout: Checkout, *, served: bool) -> None:
        """Give the turn's slot back; ``served`` when the turn sent content."""
        if checkout.released:
            return
        checkout.released = True
        if checkout.lease_id is not None:
            expires = checkout.renewed_at + self.lease_seconds
            self._give_back(checkout.credential, checkout.lease_id, served, expires)

    def renew(self, checkout: Checkout) -> None:
        """Keep a long turn's slot: called on every event, writes once a minute at most."""
        if checkout.lease_id is None or checkout.released:
            return
        step = min(LEASE_RENEW_SECONDS, self.lease_seconds / LEASE_RENEWALS)
        if time.monotonic() - checkout.renewed_at < step:
            return
        checkout.renewed_at = time.monotonic()
        lease_id, now, seconds = checkout.lease_id, self.clock(), self.lease_seconds
        account_id = checkout.credential.account_id
        try:
            self.book.update(account_id, lambda h: h.renewed(lease_id, now, seconds))
        except StateStoreUnavailable:
            # The answer goes on: the lease has most of its time left, the next event tries again.
            log.info("Could not renew a slot of %s; the turn goes on", checkout.credential.label)

    # What happened on an account

    def turn_started(self, checkout: Checkout) -> None:
        """Content came from the account: whatever failures it had are over."""
        if not checkout.had_failures:
            return
        checkout.had_failures = False
        self.book.update(
            checkout.credential.account_id, lambda h: h.recovered() if h.has_failures else None
        )
        log.info("Kimi accepts %s again", checkout.credential.label)

    def cool_down(
        self, credential: Credential, seconds: float, reason: str = REASON_RATE_LIMITED
    ) -> None:
        """Skip the account for ``seconds`` (the time Kimi gave, else the configured rest)."""
        now = self.clock()
        metrics.count_upstream_error(RateLimited.__name__)
        self.book.update(
            credential.account_id,
            lambda h: h.cooled(now + seconds, reason, RateLimited.__name__, now),
        )
        log.info("Account %s cooling down for %.0fs (%s)", credential.label, seconds, reason)

    def cool_down_research(self, credential: Credential, seconds: float) -> None:
        """Skip the account for research turns only: its other modes still work."""
        now = self.clock()
        error = ResearchQuotaExhausted.__name__
        metrics.count_upstream_error(error)
        self.book.update(
            credential.account_id, lambda h: h.research_cooled(now + seconds, error, now)
        )
        log.info("Account %s: research quota used up for %.0fs", credential.label, seconds)

    def auth_failed(self, credential: Credential) -> None:
        """Kimi rejected the token even freshly refreshed: one failure more; dead after many."""
        now = self.clock()
        error = UpstreamAuthRejected.__name__
        metrics.count_upstream_error(error)
        health = self.book.update(credential.account_id, lambda h: h.auth_failed(error, now))
        if health and health.dead_since == now:
            log.warning(
                "Account %s is dead after %d rejections; next probe in %.0fs",
                credential.label,
                health.auth_failures,
                (health.next_probe or now) - now,
            )

    def record_error(self, credential: Credential, error: KimiError) -> None:
        """Note an upstream failure (its class) that says nothing about the token."""
        now = self.clock()
        metrics.count_upstream_error(type(error).__name__)
        self.book.update(credential.account_id, lambda h: h.failed(type(error).__name__, now))

    def refreshed(self, credential: Credential) -> None:
        now = self.clock()
        metrics.count_refresh()
        self.book.update(credential.account_id, lambda h: h.refreshed(now))

    # Reading

    def cooldown(self, credential: Credential) -> Cooldown | None:
        """Why the account is skipped for every turn right now, if it is."""
        health, now = self.book.read(credential.account_id), self.clock()
        if health.cooling_until is not None and health.cooling_until > now:
            return Cooldown(health.cooling_reason or REASON_RATE_LIMITED, health.cooling_until)
        if health.dead_since is not None and not health.probe_due(now):
            return Cooldown(REASON_DEAD, health.next_probe or now)
        return None

    def health(self, pool: Sequence[Credential]) -> list[AccountHealth]:
        """The record of every account of ``pool``, in its order (for a status page)."""
        return [replace(self.book.read(c.account_id), label=c.label) for c in pool]

    # Inside

    def _ready(
        self,
        pool: Sequence[Credential],
        records: list[AccountHealth],
        exclude: set[str] | frozenset[str],
        server_pool: bool,
        research: bool,
    ) -> list[tuple[AccountHealth, Credential]]:
        """The accounts the records show available, least recently used first."""
        now = self.clock()
        cap = self.max_concurrent if server_pool else None
        ready = [
            (record, credential)
            for record, credential in zip(records, pool, strict=True)
            if credential.account_id not in exclude and record.available(now, cap, research)
        ]
        # Never used ones in the configured order (a stable sort).
        ready.sort(key=lambda pair: pair[0].last_used or 0.0)
        return ready

    def _take_first(
        self,
        ready: list[tuple[AccountHealth, Credential]],
        pool_size: int,
        server_pool: bool,
        research: bool,
    ) -> Checkout | None:
        """A slot on the first of ``ready`` that still has one when asked."""
        cap = self.max_concurrent if server_pool else None
        counted = server_pool or pool_size > 1
        for record, credential in ready:
            checkout = self._take(credential, record, counted, cap, research)
            if checkout is not None:
                return checkout
        return None

    def _take(
        self,
        credential: Credential,
        record: AccountHealth,
        counted: bool,
        cap: int | None,
        research: bool,
    ) -> Checkout | None:
        """A slot on the account, unless another turn took the last one first."""
        now = self.clock()
        if not counted and not record.probe_due(now):
            return Checkout(credential, None, record.has_failures, time.monotonic())
        lease_id = uuid.uuid4().hex if counted else None

        def take(current: AccountHealth) -> AccountHealth | None:
            if not current.available(now, cap, research):
                return None
            return current.leased(lease_id, now, self.lease_seconds)

        try:
            taken = self.book.update(credential.account_id, take)
        except StateStoreUnavailable:
            if lease_id is not None:
                # A hung store may still carry the write out when it wakes: a slot nobody holds.
                expires = time.monotonic() + self.lease_seconds
                self._give_back_later(credential, lease_id, False, expires)
            raise
        if taken is None:
            return None
        if record.dead_since is not None:
            log.info("Probing dead account %s with a turn", credential.label)
        return Checkout(credential, lease_id, taken.has_failures, time.monotonic())

    def _give_back(
        self, credential: Credential, lease_id: str, served: bool, expires: float
    ) -> None:
        """Drop the lease from the account's record now, or later if the store fails now."""
        try:
            self.book.update(credential.account_id, lambda h: h.released(lease_id, served))
        except StateStoreUnavailable:
            # The turn is over either way. Left alone, its slot would look taken until the lease
            # runs out (minutes), long after the store is back: the account would answer 429s.
            log.info("Could not give back a slot of %s yet; trying again", credential.label)
            self._give_back_later(credential, lease_id, served, expires)

    def _give_back_later(
        self, credential: Credential, lease_id: str, served: bool, expires: float
    ) -> None:
        """Retry the release in the background until it lands or the lease ends anyway."""

        def release() -> bool:
            self.book.update(credential.account_id, lambda h: h.released(lease_id, served))
            return True

        retry_in_background(
            release,
            every=RELEASE_RETRY_SECONDS,
            until=expires,
            name="kimi-slot-release",
            done=f"Gave back a slot of {credential.label} after the store came back",
        )

    def _shortage(
        self,
        pool: Sequence[Credential],
        records: list[AccountHealth],
        server_pool: bool,
        research: bool,
    ) -> _Shortage:
        now = self.clock()
        cap = self.max_concurrent if server_pool else None
        cooling = [h.cooling_until for h in records if (h.cooling_until or 0.0) > now]
        researching = [
            h.research_cooling_until
            for h in records
            if research and (h.research_cooling_until or 0.0) > now
        ]
        busy = sum(1 for h in records if cap is not None and h.in_flight(now) >= cap)
        if not (cooling or researching or busy):
            return _Shortage(_no_live_account(len(pool), server_pool), None)
        frees_in = min([t - now for t in cooling + researching] + [BUSY_RETRY_AFTER] * bool(busy))
        parts = [
            f"{busy} busy with {cap} turns each" if busy else "",
            f"{len(cooling)} rate-limited" if cooling else "",
            f"{len(researching)} out of research quota" if researching else "",
        ]
        message = (
            f"No Kimi account of the pool ({len(pool)}) is free right now: "
            f"{', '.join(p for p in parts if p)}; try again later."
        )
        if researching and not (cooling or busy):
            error: RateLimited = ResearchQuotaExhausted(message, retry_after=frees_in)
        elif busy and not (cooling or researching):
            error = RateLimited(message, retry_after=frees_in, code=BUSY_CODE)
        else:
            error = RateLimited(message, retry_after=frees_in)
        # A busy account frees up at an unknown moment: worth polling for while allowed.
        return _Shortage(error, 0.0 if busy else frees_in)


def _no_live_account(size: int, server_pool: bool) -> KimiError:
    if server_pool:
        return NoUsableAccount(
            "No usable Kimi account: every configured token was rejected lately; "
            "each is tried again later by itself."
        )
    return UpstreamAuthRejected(
        "Kimi rejected every token given in the Authorization header; get a new one."
        if size > 1
        else "Kimi rejected this token; get a new one."
    )
