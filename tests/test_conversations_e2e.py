"""Conversations: continuation on the owning account, one-shot chats cleaned up upstream."""

from __future__ import annotations

import pytest
import requests
from helpers import chat, pool_auth, sse_events, upstream_calls, wait_until

from kimi.settings import PROTOCOLS


def chats_of(emulator) -> dict:
    return emulator.state.chats()


@pytest.mark.parametrize("stream", [False, True])
def test_one_shot_chat_is_deleted_upstream_after_the_answer(client, auth, emulator, stream):
    response = chat(client, auth, stream=stream)
    response.get_data()
    # A stream's clean-up runs after [DONE], on the upstream reader's thread.
    assert wait_until(lambda: all(c["deleted"] for c in chats_of(emulator).values()))
    assert len(chats_of(emulator)) == 1


@pytest.mark.parametrize("fault", ["cut", "stream_error", "moderation"])
def test_one_shot_chat_is_deleted_when_the_stream_fails(client, auth, emulator, fault):
    emulator.state.add_fault(fault)
    chat(client, auth, stream=True).get_data()
    assert wait_until(lambda: all(c["deleted"] for c in chats_of(emulator).values()))
    assert len(chats_of(emulator)) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_shot_chat_is_deleted_when_the_client_disconnects(live_server, auth, emulator):
    emulator.state.add_fault("slow", seconds=0.2)
    response = requests.post(
        live_server.url + "/v1/chat/completions",
        json={"model": "kimi", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers=auth,
        stream=True,
        timeout=10,
    )
    assert response.status_code == 200
    next(response.iter_content(chunk_size=None))
    response.close()  # the client walks away mid-answer
    assert wait_until(lambda: any(c["deleted"] for c in chats_of(emulator).values()))


def test_conversation_none_keeps_the_chat_and_returns_its_id(client, auth, emulator):
    body = chat(client, auth, conversation_id="none").get_json()
    chats = chats_of(emulator)
    assert list(chats) == [body["id"]]
    assert not chats[body["id"]]["deleted"]


def test_continuation_sends_only_the_new_message_with_chat_and_parent_ids(client, auth, emulator):
    first = chat(client, auth, content="first question", conversation_id="none").get_json()
    chat_id = first["id"]
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "second question"},
    ]
    second = chat(client, auth, messages=messages, conversation_id=chat_id).get_json()
    assert second["choices"][0]["message"]["content"] == "Emulator reply to: second question"
    assert second["id"] == chat_id
    sent = upstream_calls(emulator, "ChatService/Chat")[-1]["body"]
    assistant = [m for m in chats_of(emulator)[chat_id]["messages"] if m["role"] == "assistant"]
    assert sent["chat_id"] == chat_id
    assert sent["message"]["parent_id"] == assistant[0]["id"]
    assert sent["message"]["blocks"][0]["text"]["content"] == "second question"
    assert not chats_of(emulator)[chat_id]["deleted"]


def test_continuation_uses_the_owning_account_whatever_the_pool_order(
    client, new_account, emulator
):
    alice, bob = new_account("alice"), new_account("bob")
    first = chat(
        client,
        {"Authorization": f"Bearer {alice.refresh_token}"},
        conversation_id="none",
    ).get_json()
    for order in ([bob, alice], [alice, bob], [bob, alice]):
        header = pool_auth(*order)
        response = chat(client, header, content="again", conversation_id=first["id"])
        assert response.status_code == 200, response.get_json()
    turns = upstream_calls(emulator, "ChatService/Chat")
    assert {c["user_id"] for c in turns} == {alice.user_id}


def test_continuation_is_refused_when_the_owner_is_not_in_the_pool(client, new_account):
    alice, bob = new_account("alice"), new_account("bob")
    first = chat(
        client, {"Authorization": f"Bearer {alice.refresh_token}"}, conversation_id="none"
    ).get_json()
    response = chat(
        client, {"Authorization": f"Bearer {bob.refresh_token}"}, conversation_id=first["id"]
    )
    assert response.status_code == 404
    assert response.get_json()["error"]["param"] == "conversation_id"


def test_a_one_shot_id_cannot_be_continued(client, auth):
    first = chat(client, auth).get_json()
    response = chat(client, auth, conversation_id=first["id"])
    assert response.status_code == 404
    assert "conversation_id" in response.get_json()["error"]["message"]


def test_stream_chunks_carry_the_kept_conversation_id(client, auth, emulator):
    events = sse_events(chat(client, auth, conversation_id="none", stream=True).get_data())
    chat_ids = list(chats_of(emulator))
    assert {e["id"] for e in events[:-1]} == set(chat_ids)
