"""The status report in words for the HTML page (templates/status.html): states with their
details, times relative to now. The template only lays these out; Jinja escapes every value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .account_health import BUSY, COOLING, DEAD, OK
from .status import AccountStatus, StatusReport, iso_time

NEVER = "never"
NONE = "—"
# Units of a duration, largest first, and how many of them a duration shows.
DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
DURATION_PARTS = 2


@dataclass(frozen=True)
class AccountRow:
    """One account's line of the table, in words."""

    label: str
    state: str
    state_detail: str
    turns_served: int
    last_error: str
    last_refresh: str
    token_age: str


def account_rows(report: StatusReport) -> list[AccountRow]:
    now = report.generated_at
    return [
        AccountRow(
            label=account.label,
            state=account.state,
            state_detail=_state_detail(account, now),
            turns_served=account.turns_served,
            last_error=_last_error(account, now),
            last_refresh=ago(account.last_refresh, now),
            token_age=_token_age(account, now),
        )
        for account in report.accounts
    ]


def duration(seconds: float) -> str:
    """``2d 3h``, ``4m 10s``, ``12s``: the two largest units."""
    remaining = max(0, int(seconds))
    parts = []
    for unit, size in DURATION_UNITS:
        if remaining >= size or (unit == "s" and not parts):
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return " ".join(parts[:DURATION_PARTS])


def ago(moment: float | None, now: float) -> str:
    return NEVER if moment is None else f"{duration(now - moment)} ago"


def clock_time(moment: float) -> str:
    """``08:40:12 UTC`` (today's times are what an operator compares)."""
    return (iso_time(moment) or "").replace("T", " ").replace("Z", " UTC")


def _state_detail(account: AccountStatus, now: float) -> str:
    if account.state == COOLING and account.cooling_until is not None:
        reason = f" · {account.cooling_reason}" if account.cooling_reason else ""
        left = duration(account.cooling_until - now)
        return f"until {clock_time(account.cooling_until)} (in {left}){reason}"
    if account.state == DEAD and account.dead_since is not None:
        probe = account.next_probe
        when = "due now" if probe is None or probe <= now else f"in {duration(probe - now)}"
        return f"since {clock_time(account.dead_since)} · next probe {when}"
    if account.state in (OK, BUSY):
        return f"{account.turns_in_flight} of {account.max_concurrent} turns running"
    return "the state store did not answer"


def _last_error(account: AccountStatus, now: float) -> str:
    if account.last_error is None:
        return NONE
    return f"{account.last_error}, {ago(account.last_error_at, now)}"


def _token_age(account: AccountStatus, now: float) -> str:
    if account.token_issued_at is None:
        return "unknown (no iat claim)"
    age = f"{duration(now - account.token_issued_at)}"
    expires = account.token_expires_at
    if expires is None:
        return age
    if expires <= now:
        return f"{age} · expired"
    return f"{age} · expires in {duration(expires - now)}"
