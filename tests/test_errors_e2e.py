"""Every failure reaches the client as the right OpenAI error, never as a fake success."""

from __future__ import annotations

import pytest
from helpers import chat, error_of, sse_events, streamed_text

from kimi import create_app


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "kimi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AA"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(client, auth, emulator, body, param):
    response = client.post("/v1/chat/completions", json=body, headers=auth)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert emulator.state.calls() == []  # nothing half-sent upstream


def test_a_body_that_is_not_json_is_400(client, auth):
    response = client.post(
        "/v1/chat/completions",
        data="{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_unknown_fields_are_ignored(client, auth):
    response = chat(client, auth, temperature=0.3, top_p=0.9, frobnicate={"x": 1}, user="u1")
    assert response.status_code == 200


def test_missing_credentials_are_401(client):
    response = chat(client, {})
    assert response.status_code == 401
    assert error_of(response)["type"] == "authentication_error"


def test_a_token_kimi_rejects_is_401(client):
    response = chat(client, {"Authorization": "Bearer not-a-kimi-token"})
    assert response.status_code == 401
    assert error_of(response)["code"] == "kimi_token_invalid"


def test_unknown_route_is_404_in_openai_shape(client):
    response = client.get("/v1/engines")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "fault, status, error_type",
    [
        ("limit", 429, "rate_limit_error"),
        ("limit_in_stream", 429, "rate_limit_error"),
        ("server_error", 502, "upstream_error"),
        ("garbage", 502, "upstream_error"),
        ("busy", 409, "conflict_error"),
    ],
)
def test_upstream_failures_before_the_answer_are_real_http_errors(
    client, auth, emulator, fault, status, error_type, stream
):
    emulator.state.add_fault(fault)
    response = chat(client, auth, stream=stream)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert error_of(response)["type"] == error_type


def test_rate_limit_carries_retry_after(client, auth, emulator):
    emulator.state.add_fault("limit")
    response = chat(client, auth)
    assert int(response.headers["Retry-After"]) > 0


def test_an_account_still_cooling_down_is_429_without_calling_kimi(client, auth, emulator):
    emulator.state.add_fault("limit")
    chat(client, auth)
    calls_before = len(emulator.state.calls())
    response = chat(client, auth)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert len(emulator.state.calls()) == calls_before


def test_upstream_timeout_is_504(make_settings, auth, emulator):
    client = create_app(make_settings(read_timeout=0.3)).test_client()
    emulator.state.add_fault("silence", seconds=1.5)
    response = chat(client, auth)
    assert response.status_code == 504
    assert error_of(response)["type"] == "timeout_error"


def test_a_server_pool_with_only_dead_tokens_is_503(make_settings, emulator):
    settings = make_settings(kimi_tokens=_credentials("dead-token-1,dead-token-2"))
    response = chat(create_app(settings).test_client(), {})
    assert response.status_code == 503
    assert error_of(response)["type"] == "service_unavailable"


@pytest.mark.parametrize("fault", ["cut", "stream_error"])
def test_a_stream_that_breaks_after_starting_ends_with_an_error_not_stop(
    client, auth, emulator, fault
):
    emulator.state.add_fault(fault)
    response = chat(client, auth, stream=True)
    assert response.status_code == 200
    events = sse_events(response.get_data())
    assert "[DONE]" not in events
    assert "error" in events[-1]
    assert events[-1]["error"]["type"] == "upstream_error"
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
    assert "stop" not in finishes


@pytest.mark.parametrize("fault", ["cut", "stream_error"])
def test_a_broken_non_stream_answer_is_502_not_a_partial_success(client, auth, emulator, fault):
    emulator.state.add_fault(fault)
    response = chat(client, auth)
    assert response.status_code == 502


@pytest.mark.parametrize("stream", [False, True])
def test_moderation_stop_is_content_filter_with_the_text_before_it(client, auth, emulator, stream):
    emulator.state.add_fault("moderation")
    response = chat(client, auth, stream=stream)
    if stream:
        events = sse_events(response.get_data())
        assert events[-1] == "[DONE]"
        reason = events[-2]["choices"][0]["finish_reason"]
        text = streamed_text(events)
    else:
        choice = response.get_json()["choices"][0]
        reason, text = choice["finish_reason"], choice["message"]["content"]
    assert reason == "content_filter"
    assert text


def test_keep_alive_comments_fill_upstream_silence(make_settings, auth, emulator):
    client = create_app(make_settings(keepalive_seconds=0.1)).test_client()
    emulator.state.add_fault("silence", seconds=0.6)
    body = chat(client, auth, stream=True).get_data(as_text=True)
    assert ": keep-alive\n\n" in body
    assert body.rstrip().endswith("data: [DONE]")


def _credentials(value: str):
    from kimi.tokens import split_credentials

    return tuple(split_credentials(value))
