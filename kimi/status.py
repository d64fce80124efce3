"""What ``GET /status`` reports: each server-pool account's health, the state store, every
worker's open streams, and the service's version.

Accounts appear by their masked label (``acct-`` and 8 hex digits of a hash of the configured
token), never by a token or any part of one; no conversation's text is read at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .account_health import BUSY, COOLING, DEAD, OK, AccountHealth
from .errors import StateStoreUnavailable
from .status_streams import InstanceStreams, StreamCensus
from .store import StateStore

if TYPE_CHECKING:
    from .service import KimiService

SERVICE_NAME = "kimi-free-api"
# The state of an account whose record could not be read (the state store failed).
UNKNOWN = "unknown"
ACCOUNT_STATES = (OK, BUSY, COOLING, DEAD, UNKNOWN)


@dataclass(frozen=True)
class AccountStatus:
    """One server-pool account as an operator sees it (times are epoch seconds or None)."""

    label: str
    state: str
    turns_in_flight: int = 0
    max_concurrent: int = 0
    turns_served: int = 0
    cooling_until: float | None = None
    cooling_reason: str | None = None
    research_cooling_until: float | None = None
    dead_since: float | None = None
    next_probe: float | None = None
    probes: int = 0
    last_used: float | None = None
    last_error: str | None = None  # the error's class name
    last_error_at: float | None = None
    last_refresh: float | None = None
    token_issued_at: float | None = None  # the current refresh token's JWT iat
    token_expires_at: float | None = None


@dataclass(frozen=True)
class StoreStatus:
    backend: str  # describe(): never a password
    healthy: bool
    error: str | None = None


@dataclass(frozen=True)
class StatusReport:
    """Everything ``/status`` shows, at ``generated_at``."""

    version: str
    protocol: str
    generated_at: float
    instance: str  # the worker that answered
    store: StoreStatus
    accounts: list[AccountStatus] = field(default_factory=list)
    streams: list[InstanceStreams] = field(default_factory=list)
    streams_error: str | None = None

    @property
    def open_streams(self) -> int:
        return sum(entry.open for entry in self.streams)

    def state_counts(self) -> dict[str, int]:
        """Accounts per state, every state listed."""
        return _state_counts(account.state for account in self.accounts)

    def to_json(self) -> dict[str, Any]:
        """The JSON body: times as ISO 8601 UTC strings, ages in whole seconds."""
        now = self.generated_at
        return {
            "service": {
                "name": SERVICE_NAME,
                "version": self.version,
                "protocol": self.protocol,
                "instance": self.instance,
                "time": iso_time(now),
            },
            "store": asdict(self.store),
            "accounts": [_account_json(account, now) for account in self.accounts],
            "account_states": self.state_counts(),
            "streams": {
                "open": self.open_streams,
                "instances": [_instance_json(entry) for entry in self.streams],
                "error": self.streams_error,
            },
        }


def build_report(service: KimiService, census: StreamCensus, version: str) -> StatusReport:
    """Read the report from the store now; a failing store is reported, not raised.

    A store that did not answer the ping is not asked again for the accounts and streams:
    each read would wait out the same timeout, only to fail the same way.
    """
    now = time.time()
    store, reachable = _probe(service.store)
    if reachable:
        accounts = account_statuses(service, now)
        streams, streams_error = _streams(census)
    else:
        accounts = [AccountStatus(c.label, UNKNOWN) for c in service.settings.kimi_tokens]
        streams, streams_error = [census.mine()], store.error
    return StatusReport(
        version=version,
        protocol=service.settings.protocol,
        generated_at=now,
        instance=census.instance,
        store=store,
        accounts=accounts,
        streams=streams,
        streams_error=streams_error,
    )


def metrics_snapshot(service: KimiService, census: StreamCensus) -> tuple[dict[str, int], bool]:
    """What ``/metrics`` reads at scrape time: accounts per state and whether the store is
    healthy. Only the health records: no token claims, no round trip of the stream census (the
    open-streams gauge is set from this worker's own count)."""
    census.mine()
    store, reachable = _probe(service.store)
    credentials = service.settings.kimi_tokens
    states = [UNKNOWN] * len(credentials)
    if reachable:
        now, cap = time.time(), service.accounts.pool.max_concurrent
        try:
            states = [r.state(now, cap) for r in service.accounts.pool.health(credentials)]
        except StateStoreUnavailable:
            pass  # the accounts stay unknown, as on the status page
    return _state_counts(states), store.healthy


def _state_counts(states: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(ACCOUNT_STATES, 0)
    for state in states:
        counts[state] += 1
    return counts


def store_status(store: StateStore) -> StoreStatus:
    return _probe(store)[0]


def _probe(store: StateStore) -> tuple[StoreStatus, bool]:
    """The store's status, and whether it answered at all."""
    try:
        healthy = store.ping()
    except StateStoreUnavailable as exc:
        return StoreStatus(store.describe(), False, exc.message), False
    error = None if healthy else "ping read back wrong"
    return StoreStatus(store.describe(), healthy, error), True


def account_statuses(service: KimiService, now: float) -> list[AccountStatus]:
    """Every server-pool account, in the configured order."""
    credentials = service.settings.kimi_tokens
    cap = service.accounts.pool.max_concurrent
    try:
        records = service.accounts.pool.health(credentials)
        claims = [service.accounts.token_claims(credential) for credential in credentials]
    except StateStoreUnavailable:
        return [AccountStatus(c.label, UNKNOWN) for c in credentials]
    return [
        _account_status(record, cap, now, token_claims)
        for record, token_claims in zip(records, claims, strict=True)
    ]


def _account_status(
    record: AccountHealth, cap: int, now: float, claims: dict[str, Any]
) -> AccountStatus:
    cooling = record.cooling_until if (record.cooling_until or 0.0) > now else None
    research = record.research_cooling_until
    return AccountStatus(
        label=record.label,
        state=record.state(now, cap),
        turns_in_flight=record.in_flight(now),
        max_concurrent=cap,
        turns_served=record.turns_served,
        cooling_until=cooling,
        cooling_reason=record.cooling_reason if cooling else None,
        research_cooling_until=research if (research or 0.0) > now else None,
        dead_since=record.dead_since,
        next_probe=record.next_probe if record.dead_since is not None else None,
        probes=record.probes,
        last_used=record.last_used,
        last_error=record.last_error,
        last_error_at=record.last_error_at,
        last_refresh=record.last_refresh,
        token_issued_at=_claim_time(claims, "iat"),
        token_expires_at=_claim_time(claims, "exp"),
    )


def _streams(census: StreamCensus) -> tuple[list[InstanceStreams], str | None]:
    """Every worker's open streams, this one's published first so that it is current."""
    try:
        census.publish()
        return census.read(), None
    except StateStoreUnavailable as exc:
        return [census.mine()], exc.message


def _claim_time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _account_json(account: AccountStatus, now: float) -> dict[str, Any]:
    body = {
        name: iso_time(value) if name in _TIME_FIELDS else value
        for name, value in asdict(account).items()
    }
    issued = account.token_issued_at
    body["token_age_seconds"] = int(now - issued) if issued is not None else None
    return body


def _instance_json(entry: InstanceStreams) -> dict[str, Any]:
    return {**asdict(entry), "seen_at": iso_time(entry.seen_at)}


_TIME_FIELDS = frozenset(
    {
        "cooling_until",
        "research_cooling_until",
        "dead_since",
        "next_probe",
        "last_used",
        "last_error_at",
        "last_refresh",
        "token_issued_at",
        "token_expires_at",
    }
)


def iso_time(epoch: float | None) -> str | None:
    """``2026-11-29T08:30:00Z`` for epoch seconds; ``None`` stays ``None``."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
