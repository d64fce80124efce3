"""Prometheus metrics: what each process counts as it serves, and what a scrape reads from the
state store (account states, the store's health).

Under gunicorn every worker writes its counters to files in ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn.conf.py makes a private folder when it is unset, before the workers fork) and a
scrape, answered by any one worker, adds all of them up. Elsewhere (the Flask dev server,
Vercel) the answer is the process's own counters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus_client chooses multiprocess value files by this variable when it is imported (just
# above); read here once, at the same moment, so that the two never disagree.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
# The text format every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Requests that matched no route share one label: a scanner's paths must not each make a series.
UNMATCHED_ROUTE = "<unmatched>"

# registry=None: collected per scrape (see ``render``), never from a global registry.
REQUESTS = Counter(
    "kimi_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
    registry=None,
)
UPSTREAM_ERRORS = Counter(
    "kimi_upstream_errors",
    "Failures met on a Kimi account, by error class (rate limits, rejected tokens, bad answers).",
    ["error"],
    registry=None,
)
REFRESHES = Counter(
    "kimi_token_refreshes",
    "Access tokens refreshed with an account's refresh token.",
    registry=None,
)
OPEN_STREAMS = Gauge(
    "kimi_open_streams",
    "Streams open now, summed over the live workers (each updates its own every few seconds).",
    multiprocess_mode="livesum",
    registry=None,
)
PROCESS_METRICS = (REQUESTS, UPSTREAM_ERRORS, REFRESHES, OPEN_STREAMS)


def count_upstream_error(error_class: str) -> None:
    """One failure on an account (the error's class name)."""
    UPSTREAM_ERRORS.labels(error_class).inc()


def count_refresh() -> None:
    REFRESHES.inc()


def count_request(route: str | None, method: str, status: int) -> None:
    """One answered request; ``route`` is the matched rule (``None``: no route matched)."""
    REQUESTS.labels(route or UNMATCHED_ROUTE, method, str(status)).inc()


def account_families(state_counts: Mapping[str, int], store_healthy: bool) -> list[Metric]:
    """What a scrape reads from the state store: server-pool accounts per state, and whether
    the store answers."""
    accounts = GaugeMetricFamily(
        "kimi_accounts", "Server-pool accounts (KIMI_TOKENS) by state.", labels=["state"]
    )
    for state, count in state_counts.items():
        accounts.add_metric([state], count)
    store = GaugeMetricFamily(
        "kimi_state_store_up", "1 when the state store took a write and read it back."
    )
    store.add_metric([], int(store_healthy))
    return [accounts, store]


class _Families:
    """A collector of metric families computed before the scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def render(scrape_time: Iterable[Metric] = ()) -> bytes:
    """The text exposition of every worker's counters plus the ``scrape_time`` families."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        MultiProcessCollector(registry, MULTIPROC_DIR)
    else:
        for metric in PROCESS_METRICS:
            registry.register(metric)
    registry.register(_Families(scrape_time))
    return generate_latest(registry)
