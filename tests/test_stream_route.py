"""The streaming route over a scripted upstream: ids, keep-alives and headers before content."""

from __future__ import annotations

import time

import pytest
from fakes import FakeUpstream, answer
from helpers import sse_events

from kimi import create_app
from kimi.service import KimiService
from kimi.settings import Settings
from kimi.store import open_store


class SlowRefreshUpstream(FakeUpstream):
    """Kimi slower to refresh than the keep-alive interval: silence before the chat opens."""

    def refresh(self, refresh_token: str):
        time.sleep(0.6)
        return super().refresh(refresh_token)


@pytest.fixture
def slow_start(tmp_path):
    settings = Settings(state_path=str(tmp_path / "state.db"), keepalive_seconds=0.2)
    upstream = SlowRefreshUpstream()
    service = KimiService(settings, store=open_store(settings.state_path), upstream=upstream)
    return create_app(settings, service=service).test_client(), upstream


def test_a_kept_chat_keeps_its_id_when_keep_alives_come_first(slow_start):
    client, upstream = slow_start
    token = upstream.account("alice").token
    upstream.reply(*answer("Hello", chat_id="chat-kept"))
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "kimi",
            "stream": True,
            "conversation_id": "none",
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.get_data(as_text=True)
    assert body.startswith(": keep-alive")  # silence before the chat opened was filled
    chunks = [e for e in sse_events(body) if isinstance(e, dict)]
    assert {chunk["id"] for chunk in chunks} == {"chat-kept"}


def test_streams_over_the_workers_cap_get_a_429_with_retry_after(tmp_path):
    settings = Settings(state_path=str(tmp_path / "state.db"), max_streams_per_worker=1)
    upstream = FakeUpstream()
    service = KimiService(settings, store=open_store(settings.state_path), upstream=upstream)
    client = create_app(settings, service=service).test_client()
    token = upstream.account("alice").token
    upstream.reply(*answer("first"))
    upstream.reply(*answer("second"))
    body = {"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    first = client.post("/v1/chat/completions", json=body, headers=headers, buffered=False)
    assert first.status_code == 200
    refused = client.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.get_json()["error"]["code"] == "too_many_streams"
    assert upstream.turn_users == ["alice"]  # the refused one never reached Kimi
    first.get_data()
    first.close()
    assert service.stream_slots.open == 0
    again = client.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 200 and "second" in again.get_data(as_text=True)
