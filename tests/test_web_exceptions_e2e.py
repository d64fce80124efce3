"""``block.exception`` inside Kimi's web answer, end to end: an overload fails over to another
account before the answer starts, a moderation ends as ``content_filter`` with the text sent so
far, anything else is an error with Kimi's message. Never a silent ``stop``."""

from __future__ import annotations

import openai
import pytest
from helpers import chat, pool_auth, sse_events, streamed_text, upstream_calls

from kimi.settings import MAX_ACCOUNTS_TRIED
from kimi_emulator.stream_failures import EXCEPTION_KINDS


def localized(kind: str) -> str:
    return EXCEPTION_KINDS[kind][2]


def chat_users(emulator) -> list[str]:
    return [call["user_id"] for call in upstream_calls(emulator, "ChatService/Chat")]


def pool_header(new_account, size: int) -> dict[str, str]:
    return pool_auth(*(new_account(f"user{i}") for i in range(size)))


def answer(response, stream: bool) -> tuple[str, str | None]:
    """The text and finish_reason a client assembles."""
    if not stream:
        choice = response.get_json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    events = sse_events(response.get_data())
    assert events[-1] == "[DONE]"
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e.get("choices")]
    return streamed_text(events), next(reason for reason in finishes if reason)


@pytest.mark.parametrize("stream", [False, True])
def test_an_overload_before_the_answer_is_answered_by_another_account(
    client, new_account, emulator, stream
):
    emulator.state.add_fault("exception:overload")
    response = chat(client, pool_header(new_account, 2), stream=stream)
    assert response.status_code == 200
    assert answer(response, stream) == ("Emulator reply to: hi", "stop")
    users = chat_users(emulator)
    assert len(users) == 2 and users[0] != users[1]


def test_overload_failover_is_bounded(client, new_account, emulator):
    emulator.state.add_fault("exception:overload", times=10)
    response = chat(client, pool_header(new_account, MAX_ACCOUNTS_TRIED + 1))
    assert response.status_code == 503
    assert len(set(chat_users(emulator))) == len(chat_users(emulator)) == MAX_ACCOUNTS_TRIED


@pytest.mark.parametrize("stream", [False, True])
def test_an_overload_with_no_other_account_is_503_and_cools_nothing_down(
    client, auth, emulator, stream
):
    emulator.state.add_fault("exception:overload")
    response = chat(client, auth, stream=stream)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["type"] == "service_unavailable"
    assert error["code"] == "upstream_overloaded"
    assert localized("overload") in error["message"]
    assert chat(client, auth).status_code == 200  # the account was not put to rest


def test_an_overload_after_the_answer_started_is_an_in_stream_error(client, new_account, emulator):
    emulator.state.add_fault("exception:overload:after_text")
    response = chat(client, pool_header(new_account, 2), stream=True)
    events = sse_events(response.get_data())
    assert streamed_text(events)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_overloaded"
    assert len(chat_users(emulator)) == 1  # after the first byte nothing is tried again


@pytest.mark.parametrize("stream", [False, True])
def test_a_moderated_answer_ends_as_content_filter_with_the_text_before_it(
    client, auth, emulator, stream
):
    emulator.state.add_fault("exception:moderation:after_text")
    text, reason = answer(chat(client, auth, content="tell me more", stream=stream), stream)
    assert reason == "content_filter"
    assert text and "Emulator reply to: tell me more".startswith(text)
    assert text != "Emulator reply to: tell me more"


@pytest.mark.parametrize("stream", [False, True])
def test_a_moderation_before_any_text_is_an_empty_content_filter(client, auth, emulator, stream):
    emulator.state.add_fault("exception:moderation")
    text, reason = answer(chat(client, auth, stream=stream), stream)
    assert (text, reason) == ("", "content_filter")


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_exception_before_the_answer_is_502_with_kimis_message(
    client, auth, emulator, stream
):
    emulator.state.add_fault("exception:unknown")
    response = chat(client, auth, stream=stream)
    assert response.status_code == 502
    assert localized("unknown") in response.get_json()["error"]["message"]


def test_an_unknown_exception_after_the_answer_started_is_an_in_stream_error(
    client, auth, emulator
):
    emulator.state.add_fault("exception:unknown:after_text")
    events = sse_events(chat(client, auth, stream=True).get_data())
    assert streamed_text(events)
    assert "[DONE]" not in events
    assert localized("unknown") in events[-1]["error"]["message"]


def test_the_openai_client_sees_content_filter(live_server, account, emulator):
    sdk = openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=account.refresh_token, max_retries=0, timeout=20
    )
    emulator.state.add_fault("exception:moderation:after_text")
    stream = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": "tell me more"}], stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Emulator")
