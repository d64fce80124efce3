"""GET /status: each server-pool account's state after the emulator drove it there, the store and
the open streams, as JSON or HTML; behind ADMIN_KEY, and never a token or a conversation's text.
"""

from __future__ import annotations

import base64

import pytest
from status_scenario import (
    ADMIN,
    ADMIN_KEY,
    API_KEY,
    SECRET_PROMPT,
    token_fragments,
)

from kimi import __version__, create_app
from kimi.account_health import BUSY, COOLING, DEAD, OK
from kimi.pool import REASON_RATE_LIMITED
from kimi.tokens import Credential

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
OPERATOR_PATHS = ("/status", "/metrics")


@pytest.fixture
def admin_app(make_settings):
    return create_app(make_settings(admin_key=ADMIN_KEY))


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_without_admin_key_the_operator_paths_are_unknown_routes(client, path):
    unknown = client.get("/no-such-page")
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 404
    assert response.get_json() == unknown.get_json()


@pytest.mark.parametrize("path", OPERATOR_PATHS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {API_KEY}"},
        {"X-Admin-Key": "wrong-key"},
        basic("admin", "wrong-key"),
        {"Authorization": f"Bearer {ADMIN_KEY}x"},
    ],
    ids=["none", "wrong-bearer", "api-key", "wrong-header", "wrong-basic", "longer"],
)
def test_a_missing_or_wrong_admin_key_is_401(make_settings, path, headers):
    settings = make_settings(admin_key=ADMIN_KEY, api_keys=(API_KEY,))
    response = create_app(settings).test_client().get(path, headers=headers)
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_admin_key"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")  # a browser asks for it


@pytest.mark.parametrize(
    "headers",
    [ADMIN, {"X-Admin-Key": ADMIN_KEY}, basic("anyone", ADMIN_KEY)],
    ids=["bearer", "header", "basic"],
)
def test_the_admin_key_opens_the_status_in_each_accepted_form(admin_app, headers):
    response = admin_app.test_client().get("/status", headers=headers)
    assert response.status_code == 200
    assert response.get_json()["service"]["version"] == __version__


def test_an_api_key_that_is_the_admin_key_is_refused_at_start():
    from kimi.settings import Settings

    with pytest.raises(ValueError, match="ADMIN_KEY"):
        Settings.from_env({"API_KEYS": "k1,k2", "ADMIN_KEY": "k2"})


def test_status_json_shows_each_account_in_the_state_the_emulator_drove_it_into(scenario):
    body = scenario.app.test_client().get("/status", headers=ADMIN).get_json()
    accounts = {account["label"]: account for account in body["accounts"]}
    assert [a["label"] for a in body["accounts"]] == list(scenario.labels.values())

    ok = accounts[scenario.labels[OK]]
    assert ok["state"] == OK
    assert ok["turns_served"] == 1
    assert ok["last_refresh"] and ok["last_error"] is None
    assert ok["token_issued_at"] and ok["token_age_seconds"] >= 0

    cooling = accounts[scenario.labels[COOLING]]
    assert cooling["state"] == COOLING
    assert cooling["cooling_until"] > body["service"]["time"]  # ISO 8601 UTC sorts as text
    assert cooling["cooling_reason"] == REASON_RATE_LIMITED
    assert cooling["last_error"] == "RateLimited"

    dead = accounts[scenario.labels[DEAD]]
    assert dead["state"] == DEAD
    assert dead["dead_since"] and dead["next_probe"] > dead["dead_since"]
    assert dead["last_error"] == "UpstreamAuthRejected"

    busy = accounts[scenario.labels[BUSY]]
    assert busy["state"] == BUSY
    assert (busy["turns_in_flight"], busy["max_concurrent"]) == (1, 1)

    assert body["account_states"] == {OK: 1, BUSY: 1, COOLING: 1, DEAD: 1, "unknown": 0}


def test_status_shows_the_store_and_this_workers_open_stream(scenario, tmp_path):
    body = scenario.app.test_client().get("/status", headers=ADMIN).get_json()
    assert body["store"] == {
        "backend": f"sqlite:{tmp_path / 'state.db'}",
        "healthy": True,
        "error": None,
    }
    streams = body["streams"]
    assert streams["open"] == 1
    (mine,) = streams["instances"]
    assert mine["instance"] == body["service"]["instance"]
    assert mine["open"] == 1
    scenario.close()  # the client is gone: the stream's count goes with it
    after = scenario.app.test_client().get("/status", headers=ADMIN).get_json()
    assert after["streams"]["open"] == 0


def test_neither_json_html_nor_metrics_show_a_token_or_a_conversation(scenario):
    client = scenario.app.test_client()
    pages = {
        "json": client.get("/status", headers=ADMIN).get_data(as_text=True),
        "html": client.get("/status", headers={**ADMIN, "Accept": BROWSER_ACCEPT}).get_data(
            as_text=True
        ),
        "metrics": client.get("/metrics", headers=ADMIN).get_data(as_text=True),
    }
    tokens = scenario.every_token()
    assert len(tokens) >= 12  # issued pairs of four users, a reissued pair, and stored ones
    for name, text in pages.items():
        assert scenario.labels[OK] in text or name == "metrics"
        for token in tokens:
            for fragment in token_fragments(token):
                assert fragment not in text, f"a token's part shows in the {name} output"
        assert SECRET_PROMPT not in text
        assert API_KEY not in text and ADMIN_KEY not in text


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (BROWSER_ACCEPT, "text/html"),
    ],
    ids=["none", "json", "any", "browser"],
)
def test_status_answers_json_to_machines_and_html_to_a_browser(admin_app, accept, content_type):
    headers = {**ADMIN, **({"Accept": accept} if accept else {})}
    response = admin_app.test_client().get("/status", headers=headers)
    assert response.status_code == 200
    assert response.mimetype == content_type
    assert response.headers["Vary"] == "Accept"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_html_page_is_self_contained(scenario):
    response = scenario.app.test_client().get(
        "/status", headers={**ADMIN, "Accept": BROWSER_ACCEPT}
    )
    page = response.get_data(as_text=True)
    assert "<style>" in page
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none';")
    for external in ("<script", "<link", "src=", "http://", "https://", "@import"):
        assert external not in page
    for state, label in scenario.labels.items():
        assert f'data-account="{label}"' in page
        assert f'class="badge state-{state}"' in page


STORE_TIMEOUT = 0.5


def test_a_hung_redis_is_reported_with_its_accounts_unknown_and_no_password(
    make_settings, new_account, private_redis
):
    token = new_account("alice").refresh_token
    settings = make_settings(
        kimi_tokens=(Credential.parse(token),),
        api_keys=(API_KEY,),
        admin_key=ADMIN_KEY,
        state_url=private_redis.url,
        state_timeout=STORE_TIMEOUT,
    )
    client = create_app(settings).test_client()
    healthy = client.get("/status", headers=ADMIN).get_json()
    assert healthy["store"]["backend"] == f"redis://127.0.0.1:{private_redis.port}/0"
    assert healthy["store"]["healthy"] is True
    private_redis.pause()
    try:
        response = client.get("/status", headers=ADMIN)
        metrics_text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
    finally:
        private_redis.resume()
    assert response.status_code == 200
    body = response.get_json()
    assert body["store"]["healthy"] is False
    assert "no answer within 0.5 s" in body["store"]["error"]
    assert [a["state"] for a in body["accounts"]] == ["unknown"]
    assert body["streams"]["error"]
    assert 'kimi_accounts{state="unknown"} 1.0' in metrics_text
    assert "kimi_state_store_up 0.0" in metrics_text
    for text in (response.get_data(as_text=True), metrics_text):
        assert private_redis.PASSWORD not in text
        assert token not in text
