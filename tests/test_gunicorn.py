"""The service under a real gunicorn, started with the Procfile's command and ``PORT``."""

from __future__ import annotations

import requests
from helpers import sse_events, stream_chat_over_http, streamed_text


def test_gunicorn_streams_a_slow_answer_chunk_by_chunk(gunicorn_server, account, emulator):
    url, process = gunicorn_server
    emulator.state.add_fault("slow", seconds=0.05)
    response = stream_chat_over_http(url, account.refresh_token)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    pieces = list(response.iter_content(chunk_size=None))
    assert len(pieces) > 3  # delivered as it was produced, not buffered into one write
    events = sse_events(b"".join(pieces))
    text = streamed_text(events)
    assert text == "Emulator reply to: hi"
    assert events[-1] == "[DONE]"


def test_gunicorn_access_log_never_shows_the_token(gunicorn_server, account):
    url, process = gunicorn_server
    requests.post(
        url + "/v1/chat/completions",
        json={"model": "kimi", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {account.refresh_token}"},
        timeout=30,
    )
    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    assert "POST /v1/chat/completions" in output
    assert account.refresh_token not in output
    assert account.refresh_token[:20] not in output
