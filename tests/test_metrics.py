"""GET /metrics: Prometheus text that prometheus_client's own parser reads, counters that move
with requests, refreshes and upstream errors, account states read from the store at scrape
time; and under a real gunicorn with two workers, one sum over both.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import chat
from prometheus_client.parser import text_string_to_metric_families
from status_scenario import ADMIN, ADMIN_KEY, STATES, drive_into_every_state

from kimi import create_app

Samples = dict[tuple[str, frozenset], float]
CHAT_ROUTE = "/v1/chat/completions"
# Requests sent until both gunicorn workers have answered some: far more than it takes.
MAX_SPREAD_REQUESTS = 1000
SPREAD_CONCURRENCY = 8


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; a labelled series not created yet reads 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> Samples:
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


@pytest.fixture
def admin_client(make_settings):
    return create_app(make_settings(admin_key=ADMIN_KEY)).test_client()


def test_request_and_refresh_counters_move_after_requests(admin_client, auth):
    before = scrape(admin_client)
    for _ in range(2):
        assert chat(admin_client, auth).status_code == 200
    assert admin_client.get("/no/such/page").status_code == 404
    after = scrape(admin_client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("kimi_requests_total", route=CHAT_ROUTE, method="POST", status="200") == 2
    assert moved("kimi_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert moved("kimi_requests_total", route="/metrics", method="GET", status="200") == 1
    assert moved("kimi_token_refreshes_total") == 1  # the access token is cached after it


def test_account_states_upstream_errors_and_open_streams(
    admin_client, make_settings, new_account, emulator, monkeypatch
):
    before = scrape(admin_client)
    scenario = drive_into_every_state(make_settings, new_account, emulator, monkeypatch)
    try:
        after = scrape(scenario.app.test_client())
    finally:
        scenario.close()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for state in STATES:
        assert value(after, "kimi_accounts", state=state) == 1
    assert value(after, "kimi_accounts", state="unknown") == 0
    assert value(after, "kimi_state_store_up") == 1
    assert value(after, "kimi_open_streams") == 1
    assert moved("kimi_upstream_errors_total", error="RateLimited") == 1
    assert moved("kimi_upstream_errors_total", error="UpstreamAuthRejected") == 3
    assert moved("kimi_token_refreshes_total") == 3  # ok, cooling and busy; dead's was refused


@pytest.mark.parametrize("gunicorn_server", [{"ADMIN_KEY": ADMIN_KEY}], indirect=True)
def test_under_gunicorn_metrics_sum_both_workers(gunicorn_server):
    url, _ = gunicorn_server

    def status_instance(_: int) -> str:
        # A new connection each time, so that either worker may take it.
        response = requests.get(url + "/status", headers=ADMIN, timeout=10)
        assert response.status_code == 200
        return response.json()["service"]["instance"]

    answered: list[str] = []
    with ThreadPoolExecutor(SPREAD_CONCURRENCY) as pool:
        while len(set(answered)) < 2 and len(answered) < MAX_SPREAD_REQUESTS:
            answered += pool.map(status_instance, range(SPREAD_CONCURRENCY))
    workers = set(answered)
    assert len(workers) == 2, "one worker answered every request"

    for _ in range(4):  # whichever worker answers the scrape, it counts both
        response = requests.get(url + "/metrics", headers=ADMIN, timeout=10)
        samples = parse(response.text)
        counted = value(samples, "kimi_requests_total", route="/status", method="GET", status="200")
        assert counted == len(answered)

    listed = requests.get(url + "/status", headers=ADMIN, timeout=10).json()["streams"]
    assert {entry["instance"] for entry in listed["instances"]} == workers


@pytest.fixture
def leftover_metrics_folders():
    """Metrics folders as a SIGKILLed master leaves them, and one of a master still running."""
    parent = Path("/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir())
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no process
    gone = parent / f"kimi-metrics-{dead.pid}-leftover"
    running = parent / f"kimi-metrics-{os.getpid()}-inuse"
    for folder in (gone, running):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x" * 1024)
    yield gone, running
    for folder in (gone, running):
        if folder.exists():
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()


def test_a_new_master_removes_the_metrics_folders_of_killed_masters_only(
    leftover_metrics_folders, gunicorn_server
):
    gone, running = leftover_metrics_folders
    assert not gone.exists()  # a killed master's: removed when the next one starts
    assert running.exists()  # a live master's (this process stands for one): kept
