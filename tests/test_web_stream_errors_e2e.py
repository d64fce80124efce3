"""Error frames inside Kimi's web answer stream, end to end: the client gets the right status and
error body before the answer starts, an in-stream error after it, never a silent ``stop``."""

from __future__ import annotations

import pytest
from helpers import chat, error_of, sse_events, streamed_text, upstream_calls

from kimi_emulator.stream_failures import ERROR_KINDS

# fault kind -> (status, OpenAI error type) when the error comes before any answer text
BEFORE_TEXT = [
    ("chat_busy", 409, "conflict_error"),
    ("invalid_argument", 400, "invalid_request_error"),
    ("unavailable", 503, "service_unavailable"),
    ("deadline_exceeded", 504, "timeout_error"),
    ("unimplemented", 502, "upstream_error"),
    ("unknown", 502, "upstream_error"),
    ("not_found", 502, "upstream_error"),  # a one-shot turn names no chat to be "not found"
    ("permission_denied", 502, "upstream_error"),
]


def localized(kind: str) -> str:
    return ERROR_KINDS[kind][2]


def chat_calls(emulator) -> list[dict]:
    return upstream_calls(emulator, "ChatService/Chat")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("placement", ["", ":after_done"])
@pytest.mark.parametrize("kind, status, error_type", BEFORE_TEXT)
def test_an_error_frame_before_the_answer_is_a_real_http_error(
    client, auth, emulator, kind, status, error_type, placement, stream
):
    emulator.state.add_fault(f"error_end:{kind}{placement}")
    response = chat(client, auth, stream=stream)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = error_of(response)
    assert error["type"] == error_type
    assert localized(kind) in error["message"]
    assert len(chat_calls(emulator)) == 1  # none of these is tried again


@pytest.mark.parametrize("kind", ["not_found", "permission_denied"])
def test_a_kept_chat_kimi_no_longer_knows_is_404(client, auth, emulator, kind):
    first = chat(client, auth, conversation_id="none").get_json()
    emulator.state.add_fault(f"error_end:{kind}:after_done")
    response = chat(client, auth, content="again", conversation_id=first["id"])
    assert response.status_code == 404
    assert error_of(response)["param"] == "conversation_id"


@pytest.fixture
def chat_route_refusing(kimi_refusing):
    """A client whose Kimi answers the Chat call with an HTTP 404 ``not_found``."""
    return kimi_refusing("/apiv2/kimi.gateway.chat.v1.ChatService/Chat", 404, "not_found", "gone")


@pytest.mark.parametrize("stream", [False, True])
def test_a_one_shot_turn_refused_with_http_404_is_a_502_not_an_unknown_conversation(
    chat_route_refusing, auth, stream
):
    response = chat(chat_route_refusing, auth, stream=stream)
    assert response.status_code == 502
    error = error_of(response)
    assert (error["code"], error["param"]) == ("kimi_not_found", None)
    assert "gone" in error["message"] and "conversation" not in error["message"]


def test_a_kept_chat_refused_with_http_404_is_still_404(client, chat_route_refusing, auth):
    first = chat(client, auth, conversation_id="none").get_json()
    response = chat(chat_route_refusing, auth, content="again", conversation_id=first["id"])
    assert response.status_code == 404
    assert error_of(response)["param"] == "conversation_id"


@pytest.mark.parametrize("stream", [False, True])
def test_an_unauthenticated_frame_refreshes_once_and_answers(client, auth, emulator, stream):
    chat(client, auth)  # the access token is cached now
    emulator.state.clear_calls()
    emulator.state.add_fault("error_end:unauthenticated:after_done")
    response = chat(client, auth, stream=stream)
    assert response.status_code == 200
    assert len(upstream_calls(emulator, "RefreshToken")) == 1  # after the rejection
    assert len(chat_calls(emulator)) == 2


def test_an_unauthenticated_frame_twice_is_401(client, auth, emulator):
    emulator.state.add_fault("error_end:unauthenticated", times=2)
    response = chat(client, auth)
    assert response.status_code == 401
    assert error_of(response)["code"] == "kimi_token_invalid"
    assert localized("unauthenticated") in error_of(response)["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limit_frame_fails_over_to_the_next_account(client, new_account, emulator, stream):
    alice, bob = new_account("alice"), new_account("bob")
    header = {"Authorization": f"Bearer {alice.refresh_token},{bob.refresh_token}"}
    emulator.state.add_fault("error_end:rate_limited:after_done")
    response = chat(client, header, stream=stream)
    assert response.status_code == 200
    users = [call["user_id"] for call in chat_calls(emulator)]
    assert len(users) == 2 and users[0] != users[1]


def test_a_rate_limit_frame_with_no_account_left_is_429_with_retry_after(client, auth, emulator):
    emulator.state.add_fault("error_end:rate_limited:after_done")
    response = chat(client, auth)
    assert response.status_code == 429
    assert error_of(response)["type"] == "rate_limit_error"
    assert int(response.headers["Retry-After"]) > 0
    assert localized("rate_limited") in error_of(response)["message"]


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_an_error_frame_after_answer_text_is_an_in_stream_error(client, auth, emulator, kind):
    emulator.state.add_fault(f"error_end:{kind}:after_text")
    response = chat(client, auth, stream=True)
    assert response.status_code == 200
    events = sse_events(response.get_data())
    assert streamed_text(events)  # the words that came before the error
    assert "[DONE]" not in events
    assert localized(kind) in events[-1]["error"]["message"]
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
    assert finishes == [None] * len(finishes)
    assert len(chat_calls(emulator)) == 1  # after the first byte nothing is tried again


@pytest.mark.parametrize(
    "kind, status", [("unavailable", 503), ("invalid_argument", 400), ("unknown", 502)]
)
def test_an_error_frame_after_answer_text_fails_a_non_stream_request(
    client, auth, emulator, kind, status
):
    emulator.state.add_fault(f"error_end:{kind}:after_text")
    response = chat(client, auth)
    assert response.status_code == status
    assert localized(kind) in error_of(response)["message"]


# --- the chat of a failed turn ----------------------------------------------------------------


def live_chats(emulator) -> list[str]:
    return [chat_id for chat_id, chat in emulator.state.chats().items() if not chat["deleted"]]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stored_response_that_fails_after_its_start_leaves_no_chat(
    client, auth, emulator, stream
):
    """Only a completed response is recorded: its chat could never be reached again."""
    emulator.state.add_fault("error_end:unknown:after_text")
    response = client.post(
        "/v1/responses", headers=auth, json={"model": "kimi", "input": "hi", "stream": stream}
    )
    body = response.get_data(as_text=True)
    assert ("response.failed" in body) if stream else response.status_code == 502
    assert len(chat_calls(emulator)) == 1
    assert live_chats(emulator) == []


def test_a_stored_response_cut_by_max_output_tokens_keeps_its_chat_to_go_on_with(
    client, auth, emulator
):
    body = {"model": "kimi", "input": "hi", "max_output_tokens": 2}
    first = client.post("/v1/responses", headers=auth, json=body).get_json()
    assert first["status"] == "incomplete"
    assert len(live_chats(emulator)) == 1
    follow = {"model": "kimi", "input": "go on", "previous_response_id": first["id"]}
    assert client.post("/v1/responses", headers=auth, json=follow).status_code == 200


def test_a_kept_chat_failing_in_a_non_stream_answer_is_deleted(client, auth, emulator):
    """The error carries no id: the client could never go on with that chat."""
    emulator.state.add_fault("error_end:unknown:after_text")
    assert chat(client, auth, conversation_id="none").status_code == 502
    assert live_chats(emulator) == []


def test_a_kept_chat_failing_in_a_stream_stays_for_the_client_to_go_on_with(client, auth, emulator):
    """Every chunk before the error carried the chat's id."""
    emulator.state.add_fault("error_end:unknown:after_text")
    events = sse_events(chat(client, auth, conversation_id="none", stream=True).get_data())
    chat_id = events[0]["id"]
    assert live_chats(emulator) == [chat_id]
    again = chat(client, auth, content="again", conversation_id=chat_id)
    assert again.status_code == 200
