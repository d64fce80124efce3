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
