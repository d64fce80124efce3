"""What the pool knows about each account, kept in the state store under the account's id.

One small JSON record per account (``AccountHealth``), changed only by compare-and-set, so every
worker sees the same slots in use, cool-downs and failures. The record of a token that was
removed from the configuration is simply never read again, and expires after a month.

An account moves between these states::

    ok ──(turns in flight = cap)──> busy ──(a turn ends)──> ok
    ok ──(rate limit, quota)──> cooling ──(the time Kimi gave passes)──> ok
    ok ──(token rejected again and again, over a minute or more)──> dead
    dead ──(probe due: 1 min, 5 min, 30 min, 2 h, then every 4 h)──> one real turn tried
    any ──(a turn on the account gets content)──> failures forgotten
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from .store import StateStore

OK, BUSY, COOLING, DEAD = "ok", "busy", "cooling", "dead"
# A token is dead only after this many rejections in a row that span this long: one bad
# minute at Kimi (or a burst of requests meeting one bad token) does not bench an account.
DEAD_AFTER_FAILURES = 3
DEAD_AFTER_SECONDS = 60.0
# When a dead account is tried again: after each probe that fails, the next step.
PROBE_DELAYS = (60.0, 300.0, 1800.0, 7200.0, 14400.0)
# Records are rewritten on every change; one untouched this long belongs to a removed token.
RECORD_TTL = 30 * 24 * 3600.0
KEY_PREFIX = "health:"
# After this many lost compare-and-sets in a row, back off a little before the next try.
CAS_CALM_AFTER = 5
CAS_CALM_SECONDS = 0.01


def probe_delay(probes: int) -> float:
    """Seconds until the next probe of a dead account that has had ``probes`` probes."""
    return PROBE_DELAYS[min(probes, len(PROBE_DELAYS) - 1)]


@dataclass(frozen=True)
class AccountHealth:
    """One account's record: slots in use, cool-downs, failures and counters (times are epoch
    seconds, ``None`` for never). ``label`` is filled in when read, never stored."""

    account_id: str
    label: str = ""
    leases: dict[str, float] = field(default_factory=dict)  # turn's lease id -> expiry
    last_used: float | None = None
    turns_served: int = 0
    cooling_until: float | None = None
    cooling_reason: str | None = None
    research_cooling_until: float | None = None
    auth_failures: int = 0  # rejections in a row
    first_failure_at: float | None = None
    dead_since: float | None = None
    next_probe: float | None = None
    probes: int = 0  # probes of the dead account so far
    last_error: str | None = None  # the error's class name
    last_error_at: float | None = None
    last_refresh: float | None = None

    # Reading

    def in_flight(self, now: float) -> int:
        """Turns holding a slot on this account whose lease has not run out."""
        return sum(1 for expiry in self.leases.values() if expiry > now)

    def state(self, now: float, max_concurrent: int | None = None) -> str:
        """``ok``, ``busy``, ``cooling`` or ``dead`` (a dead account stays dead while probed)."""
        if self.dead_since is not None:
            return DEAD
        if self.cooling_until is not None and self.cooling_until > now:
            return COOLING
        if max_concurrent is not None and self.in_flight(now) >= max_concurrent:
            return BUSY
        return OK

    def probe_due(self, now: float) -> bool:
        return self.dead_since is not None and (self.next_probe or 0.0) <= now

    def available(self, now: float, max_concurrent: int | None, research: bool) -> bool:
        """Whether a turn (a research one when ``research``) may start here now."""
        if self.dead_since is not None and not self.probe_due(now):
            return False
        if self.cooling_until is not None and self.cooling_until > now:
            return False
        if research and (self.research_cooling_until or 0.0) > now:
            return False
        return max_concurrent is None or self.in_flight(now) < max_concurrent

    @property
    def has_failures(self) -> bool:
        return self.auth_failures > 0 or self.dead_since is not None

    # Changes: each returns a new record

    def leased(self, lease_id: str | None, now: float, lease_seconds: float) -> AccountHealth:
        """A turn starts here (as the probe, when one is due: the next one moves on)."""
        leases = {k: v for k, v in self.leases.items() if v > now}
        if lease_id is not None:
            leases[lease_id] = now + lease_seconds
        changed = replace(self, leases=leases, last_used=now)
        if self.probe_due(now):
            changed = replace(
                changed, probes=self.probes + 1, next_probe=now + probe_delay(self.probes + 1)
            )
        return changed

    def renewed(self, lease_id: str, now: float, lease_seconds: float) -> AccountHealth:
        if lease_id not in self.leases:
            return self  # expired and swept meanwhile: the turn runs on without a slot
        return replace(self, leases={**self.leases, lease_id: now + lease_seconds})

    def released(self, lease_id: str | None, served: bool) -> AccountHealth:
        leases = {k: v for k, v in self.leases.items() if k != lease_id}
        return replace(self, leases=leases, turns_served=self.turns_served + int(served))

    def recovered(self) -> AccountHealth:
        """Kimi accepted the token again: failures and probes are forgotten."""
        return replace(
            self, auth_failures=0, first_failure_at=None, dead_since=None, next_probe=None, probes=0
        )

    def cooled(self, until: float, reason: str, error: str, now: float) -> AccountHealth:
        return replace(self.failed(error, now), cooling_until=until, cooling_reason=reason)

    def research_cooled(self, until: float, error: str, now: float) -> AccountHealth:
        return replace(self.failed(error, now), research_cooling_until=until)

    def auth_failed(self, error: str, now: float) -> AccountHealth:
        """One more rejection in a row; dead once they are many and span some time."""
        first = self.first_failure_at if self.first_failure_at is not None else now
        changed = replace(
            self.failed(error, now), auth_failures=self.auth_failures + 1, first_failure_at=first
        )
        many = changed.auth_failures >= DEAD_AFTER_FAILURES
        if self.dead_since is None and many and now - first >= DEAD_AFTER_SECONDS:
            changed = replace(changed, dead_since=now, probes=0, next_probe=now + probe_delay(0))
        return changed

    def failed(self, error: str, now: float) -> AccountHealth:
        return replace(self, last_error=error, last_error_at=now)

    def refreshed(self, now: float) -> AccountHealth:
        return replace(self, last_refresh=now)

    # Storage

    def to_json(self) -> str:
        data = asdict(self)
        del data["label"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> AccountHealth:
        data = json.loads(raw)
        # Fields a newer or older version wrote and this one does not know are left out.
        return cls(**{name: data[name] for name in _STORED_FIELDS if name in data})


_STORED_FIELDS = tuple(name for name in AccountHealth.__dataclass_fields__ if name != "label")


class HealthBook:
    """``AccountHealth`` records in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def read(self, account_id: str) -> AccountHealth:
        raw = self.store.get(KEY_PREFIX + account_id)
        return AccountHealth.from_json(raw) if raw else AccountHealth(account_id)

    def update(
        self, account_id: str, change: Callable[[AccountHealth], AccountHealth | None]
    ) -> AccountHealth | None:
        """Apply ``change`` to the current record atomically; ``None`` from it changes nothing.

        ``change`` may run several times: when another worker wrote first, it runs again on
        what that worker wrote.
        """
        key = KEY_PREFIX + account_id
        lost = 0
        while True:
            raw = self.store.get(key)
            current = AccountHealth.from_json(raw) if raw else AccountHealth(account_id)
            changed = change(current)
            if changed is None:
                return None
            if changed == current:
                return current
            if self.store.compare_and_set(key, raw, changed.to_json(), ttl=RECORD_TTL):
                return changed
            # Each lost round means another writer won: the loop ends when they are done.
            lost += 1
            if lost >= CAS_CALM_AFTER:
                time.sleep(random.uniform(0, CAS_CALM_SECONDS))
