"""Accounts: rotated refresh tokens survive restarts, refreshes merge, failover between accounts."""

from __future__ import annotations

import threading

import pytest
from helpers import chat, upstream_calls, wait_until
from test_pool import FakeClock

from kimi import create_app
from kimi.account_health import DEAD_AFTER_FAILURES, DEAD_AFTER_SECONDS, PROBE_DELAYS
from kimi.pool import BUSY_CODE
from kimi.tokens import Credential

REFRESH = "AuthService/RefreshToken"


def test_rotated_refresh_token_is_used_after_a_restart(make_settings, auth, emulator):
    # Access tokens shorter than our safety margin are never cached: every turn refreshes.
    # (2 s, not 1: expiry is whole seconds, so a 1 s token can be dead on arrival.)
    emulator.state.configure(access_ttl=2)
    settings = make_settings()
    assert chat(create_app(settings).test_client(), auth).status_code == 200
    restarted = create_app(settings)  # same state file, nothing else carried over
    response = chat(restarted.test_client(), auth)
    assert response.status_code == 200, response.get_json()
    refreshes = upstream_calls(emulator, REFRESH)
    assert [c["status"] for c in refreshes] == [200, 200]


def test_without_the_state_file_the_rotated_away_token_is_dead(make_settings, auth, tmp_path):
    assert chat(create_app(make_settings()).test_client(), auth).status_code == 200
    fresh_state = make_settings(state_path=str(tmp_path / "other.db"))
    assert chat(create_app(fresh_state).test_client(), auth).status_code == 401


def test_access_token_is_cached_between_requests(client, auth, emulator):
    for _ in range(3):
        assert chat(client, auth).status_code == 200
    assert len(upstream_calls(emulator, REFRESH)) == 1


def test_an_expired_access_token_is_refreshed_before_use(make_settings, auth, emulator):
    emulator.state.configure(access_ttl=61.2)  # lives ~1 s past our 60 s safety margin
    client = create_app(make_settings()).test_client()
    assert chat(client, auth).status_code == 200
    _sleep(1.4)
    assert chat(client, auth).status_code == 200
    assert len(upstream_calls(emulator, REFRESH)) == 2


def test_concurrent_requests_share_one_refresh(app, auth, emulator):
    emulator.state.configure(frame_delay=0.01)
    statuses = []

    def call():
        statuses.append(chat(app.test_client(), auth).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 8
    assert len(upstream_calls(emulator, REFRESH)) == 1


def test_a_rejected_access_token_is_refreshed_once_and_retried(client, auth, emulator):
    chat(client, auth)
    emulator.state.add_fault("unauthorized")
    response = chat(client, auth)
    assert response.status_code == 200
    assert len(upstream_calls(emulator, REFRESH)) == 2


def test_a_token_rejected_even_after_refresh_is_401(client, auth, emulator):
    chat(client, auth)
    emulator.state.add_fault("unauthorized", times=2)
    response = chat(client, auth)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "kimi_token_invalid"


def test_a_token_rejected_twice_in_a_row_is_asked_again_next_time(client, auth, emulator):
    chat(client, auth)
    emulator.state.add_fault("unauthorized", times=2)
    assert chat(client, auth).status_code == 401
    response = chat(client, auth)  # Kimi takes the token again: so do we
    assert response.status_code == 200, response.get_json()
    assert len(upstream_calls(emulator, "ChatService/Chat")) == 4


def test_a_token_rejected_over_time_rests_then_is_probed_and_used_again(
    make_settings, auth, emulator
):
    app = create_app(make_settings())
    clock = FakeClock()
    app.extensions["kimi"].accounts.pool.clock = clock
    client = app.test_client()
    for _ in range(DEAD_AFTER_FAILURES):
        # Once with a freshly refreshed token is enough for a rejection to count.
        emulator.state.add_fault("unauthorized")
        assert chat(client, auth).status_code == 401
        clock.advance(DEAD_AFTER_SECONDS / (DEAD_AFTER_FAILURES - 1))
    asked = len(upstream_calls(emulator, "ChatService/Chat"))
    assert chat(client, auth).status_code == 401  # dead: not even asked
    assert len(upstream_calls(emulator, "ChatService/Chat")) == asked
    clock.advance(PROBE_DELAYS[0])
    response = chat(client, auth)  # the probe finds the token alive
    assert response.status_code == 200, response.get_json()
    assert chat(client, auth).status_code == 200


@pytest.mark.parametrize("protocol", ["legacy"])
def test_an_exhausted_research_quota_leaves_plain_turns_alone(client, auth, emulator):
    emulator.state.add_fault("research_exhausted")
    assert chat(client, auth, model="kimi-research").status_code == 429
    plain = chat(client, auth)
    assert plain.status_code == 200, plain.get_json()
    again = chat(client, auth, model="kimi-research")
    assert again.status_code == 429
    assert again.get_json()["error"]["code"] == "research_quota_exhausted"
    assert int(again.headers["Retry-After"]) >= 1
    assert len(upstream_calls(emulator, "research/usage")) == 1  # the rest is remembered


@pytest.mark.parametrize("protocol", ["legacy"])
def test_research_fails_over_to_an_account_with_quota(client, new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.state.add_fault("research_exhausted", user_id=alice.user_id)
    header = {"Authorization": f"Bearer {alice.refresh_token},{bob.refresh_token}"}
    response = chat(client, header, model="kimi-research")
    assert response.status_code == 200, response.get_json()
    usage = upstream_calls(emulator, "research/usage")
    assert [c["user_id"] for c in usage] == [alice.user_id, bob.user_id]


def test_a_server_account_at_its_turn_cap_answers_429_until_a_turn_ends(
    make_settings, account, emulator
):
    settings = make_settings(
        kimi_tokens=(Credential.parse(account.refresh_token),),
        api_keys=("key",),
        max_concurrent_per_account=1,
    )
    client = create_app(settings).test_client()
    header = {"Authorization": "Bearer key"}
    emulator.state.add_fault("slow", seconds=0.3)
    first = chat(client, header, "first", stream=True)
    assert first.status_code == 200
    busy = chat(client, header, "second")
    assert busy.status_code == 429
    assert busy.get_json()["error"]["code"] == BUSY_CODE
    assert int(busy.headers["Retry-After"]) >= 1
    assert "first" in first.get_data(as_text=True)  # read to its end: the slot is free
    first.close()
    assert wait_until(lambda: chat(client, header, "third").status_code == 200)


def test_a_rate_limited_account_fails_over_to_the_next(client, new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.state.add_fault("limit", times=5, user_id=alice.user_id)
    header = {"Authorization": f"Bearer {alice.refresh_token},{bob.refresh_token}"}
    for _ in range(3):
        response = chat(client, header)
        assert response.status_code == 200
    turns = upstream_calls(emulator, "ChatService/Chat")
    assert [c["user_id"] for c in turns if c["status"] == 200] == [bob.user_id] * 3
    assert len([c for c in turns if c["user_id"] == alice.user_id]) <= 1  # then cooling down


def test_a_dead_account_in_the_pool_is_skipped(client, new_account, emulator):
    bob = new_account("bob")
    header = {"Authorization": f"Bearer dead-token,{bob.refresh_token}"}
    for _ in range(3):
        assert chat(client, header).status_code == 200


def test_an_access_token_credential_is_used_as_is(client, account, emulator):
    response = chat(client, {"Authorization": f"Bearer {account.access_token}"})
    assert response.status_code == 200
    assert upstream_calls(emulator, REFRESH) == []


def test_identity_headers_come_from_the_token_claims(client, auth, account, emulator):
    chat(client, auth)
    headers = upstream_calls(emulator, "ChatService/Chat")[-1]["headers"]
    assert headers["X-Traffic-Id"] == account.user_id
    assert headers["X-Msh-Platform"] == "web"
    assert headers["Connect-Protocol-Version"] == "1"
    assert headers["X-Msh-Device-Id"]


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)
