"""The status page in a real browser: Debian's chromium, driven by playwright, renders the page
(asking for the admin key as a browser does, with Basic authentication) and shows each account's
state. A screenshot is kept in test-artifacts/ for a person to look at.

playwright is used only as a driver for the system chromium: its own browser download
(``playwright install``) is never needed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import ROOT
from status_scenario import ADMIN_KEY, STATES, token_fragments

from kimi.account_health import BUSY, COOLING, DEAD, OK

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "status-page.png"
PAGE_TIMEOUT_MS = 15_000
# What each state's row says besides its name.
STATE_DETAILS = {
    OK: "0 of 1 turns running",
    BUSY: "1 of 1 turns running",
    COOLING: "rate_limited",
    DEAD: "next probe in",
}


@pytest.fixture
def app(scenario):
    """The status app, for the ``live_server`` fixture."""
    return scenario.app


@pytest.fixture
def browser_context():
    """A fresh headless chromium profile that knows the admin key (Basic: any user name)."""
    if not Path(CHROMIUM).exists():
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing browser is a broken run
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            http_credentials={"username": "operator", "password": ADMIN_KEY},
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        yield context
        context.close()


def test_the_browser_shows_each_accounts_state(scenario, live_server, browser_context):
    page = browser_context.new_page()
    response = page.goto(live_server.url + "/status")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    for state in STATES:
        row = page.locator(f'tr[data-account="{scenario.labels[state]}"]')
        badge = row.locator("td.state .badge")
        sync_api.expect(badge).to_be_visible()
        sync_api.expect(badge).to_have_text(state)
        sync_api.expect(row.locator("td.state .detail")).to_contain_text(STATE_DETAILS[state])
    sync_api.expect(page.locator("#store")).to_contain_text("sqlite:")
    sync_api.expect(page.locator("h2", has_text="Open streams")).to_have_text("Open streams: 1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    rendered = page.inner_text("body")
    for token in scenario.every_token():
        for fragment in token_fragments(token):
            assert fragment not in rendered
