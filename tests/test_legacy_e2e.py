"""The 2024 protocol end to end: KIMI_PROTOCOL=legacy through the app against the emulator."""

from __future__ import annotations

import threading

import pytest
from helpers import chat, sse_events, streamed_text, upstream_calls, wait_until

from kimi.upstream.legacy import K1_AGENT


@pytest.fixture
def protocol() -> str:
    return "legacy"


def text_of(response) -> str:
    if response.mimetype == "text/event-stream":
        return streamed_text(sse_events(response.get_data()))
    return response.get_json()["choices"][0]["message"]["content"]


def paths(emulator) -> list[str]:
    return [f"{c['method']} {c['path']}" for c in emulator.state.calls()]


def completion_bodies(emulator) -> list[dict]:
    return [c["body"] for c in upstream_calls(emulator, "/completion/stream")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_turn_is_refresh_user_create_stream_delete_and_nothing_else(
    client, auth, emulator, stream
):
    response = chat(client, auth, stream=stream)
    assert text_of(response) == "Emulator reply to: hi"
    assert wait_until(lambda: len(emulator.state.calls()) == 5)
    chat_id = next(iter(emulator.state.chats()))
    assert paths(emulator) == [
        "GET /api/auth/token/refresh",
        "GET /api/user",
        "POST /api/chat",
        f"POST /api/chat/{chat_id}/completion/stream",
        f"DELETE /api/chat/{chat_id}",
    ]


def test_access_token_and_user_id_are_cached(client, auth, account, emulator):
    chat(client, auth)
    chat(client, auth)
    assert len(upstream_calls(emulator, "/api/auth/token/refresh")) == 1
    turns = upstream_calls(emulator, "/completion/stream")
    assert [c["headers"]["X-Traffic-Id"] for c in turns] == [account.user_id] * 2


def test_concurrent_turns_share_one_refresh(app, auth, emulator):
    statuses = []
    threads = [
        threading.Thread(target=lambda: statuses.append(chat(app.test_client(), auth).status_code))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 6
    assert len(upstream_calls(emulator, "/api/auth/token/refresh")) == 1


def test_a_rejected_access_token_is_refreshed_once_and_retried(client, auth, emulator):
    chat(client, auth)
    emulator.state.add_fault("unauthorized")
    assert chat(client, auth).status_code == 200
    assert len(upstream_calls(emulator, "/api/auth/token/refresh")) == 2


def test_a_token_rejected_after_refresh_is_401(client, auth, emulator):
    chat(client, auth)
    emulator.state.add_fault("unauthorized", times=2)
    response = chat(client, auth)
    assert response.status_code == 401


def test_chinese_split_across_reads_is_decoded_whole(client, auth, emulator):
    emulator.state.configure(split_frames=True)
    response = chat(client, auth, content="你好，今天天气怎么样？", stream=True)
    assert text_of(response) == "Emulator reply to: 你好，今天天气怎么样？"


def test_history_is_flattened_with_the_focus_hint_and_url_tags(client, auth, emulator):
    messages = [
        {"role": "user", "content": "Read https://example.com/a please"},
        {"role": "assistant", "content": "See https://example.com/b"},
        {"role": "user", "content": "And summarise"},
    ]
    chat(client, auth, messages=messages)
    prompt = completion_bodies(emulator)[-1]["messages"][0]["content"]
    lines = prompt.splitlines()
    tag = '<url id="" type="url" status="" title="" wc="">https://example.com/a</url>'
    assert lines[0] == f"user:Read {tag} please"
    assert lines[1] == "assistant:See https://example.com/b"
    assert lines[2].startswith("system:")
    assert lines[3] == "user:And summarise"


def test_a_kept_chat_is_continued_with_its_owner_and_not_deleted(client, new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    first = chat(client, {"Authorization": f"Bearer {alice.refresh_token}"}, conversation_id="none")
    chat_id = first.get_json()["id"]
    assert len(chat_id) == 20
    header = {"Authorization": f"Bearer {bob.refresh_token},{alice.refresh_token}"}
    for _ in range(3):
        response = chat(client, header, content="more", conversation_id=chat_id)
        assert response.status_code == 200
        assert response.get_json()["id"] == chat_id
    creates = [p for p in paths(emulator) if p == "POST /api/chat"]
    assert len(creates) == 1
    assert {c["user_id"] for c in upstream_calls(emulator, "/completion/stream")} == {alice.user_id}
    assert not emulator.state.chats()[chat_id]["deleted"]
    assert not [c for c in emulator.state.calls() if c["method"] == "DELETE"]


@pytest.mark.parametrize("stream", [False, True])
def test_search_results_are_listed_after_the_answer(client, auth, emulator, stream):
    text = text_of(chat(client, auth, model="kimi-search", stream=stream))
    assert text.startswith("Emulator reply to: hi")
    assert "1. [Weather report 1](https://example.com/weather/1)" in text
    assert "2. [Weather report 2](https://example.com/weather/2)" in text
    assert completion_bodies(emulator)[-1]["use_search"] is True


def test_silent_search_lists_no_sources(client, auth):
    assert text_of(chat(client, auth, model="kimi-search-silent")) == "Emulator reply to: hi"


@pytest.mark.parametrize(
    "model, field, value",
    [
        ("kimi-math", "use_math", True),
        ("kimi-research", "use_research", True),
        ("kimi-k1", "kimiplus_id", K1_AGENT),
        ("abcdefghij0123456789", "kimiplus_id", "abcdefghij0123456789"),
        ("kimi", "kimiplus_id", "kimi"),
    ],
)
def test_model_flags_reach_the_completion_call(client, auth, emulator, model, field, value):
    assert chat(client, auth, model=model).status_code == 200
    assert completion_bodies(emulator)[-1][field] == value


def test_research_checks_the_quota_before_creating_a_chat(client, auth, emulator):
    chat(client, auth, model="kimi-research")
    order = [p for p in paths(emulator) if "research" in p or p == "POST /api/chat"]
    assert order == ["GET /api/chat/research/usage", "POST /api/chat"]


def test_research_with_the_quota_used_up_is_a_clear_429(client, auth, emulator):
    emulator.state.add_fault("research_exhausted")
    response = chat(client, auth, model="kimi-research")
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "research_quota_exhausted"
    assert emulator.state.chats() == {}


@pytest.mark.parametrize("fault", ["length", "length_twice"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_length_limited_answer_is_continued_into_one_whole_answer(
    client, auth, emulator, fault, stream
):
    emulator.state.add_fault(fault)
    response = chat(client, auth, content="tell me a long story", stream=stream)
    assert text_of(response) == "Emulator reply to: tell me a long story"
    bodies = completion_bodies(emulator)
    assert bodies[1]["action"] == "continue"
    assert bodies[1]["segment_id"]
    if stream:
        events = sse_events(response.get_data())
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
    else:
        assert response.get_json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_event_is_content_filter_with_the_text_before_it(client, auth, emulator, stream):
    emulator.state.add_fault("moderation")
    response = chat(client, auth, stream=stream)
    assert response.status_code == 200
    assert text_of(response)
    if stream:
        events = sse_events(response.get_data())
        assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    else:
        assert response.get_json()["choices"][0]["finish_reason"] == "content_filter"


def test_a_busy_chat_is_a_409(client, auth, emulator):
    emulator.state.add_fault("busy")
    response = chat(client, auth)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conversation_busy"


@pytest.mark.parametrize("fault, status", [("limit", 429), ("server_error", 502), ("garbage", 502)])
def test_upstream_failures_are_real_http_errors(client, auth, emulator, fault, status):
    emulator.state.add_fault(fault)
    response = chat(client, auth, stream=True)
    assert response.status_code == status


@pytest.mark.parametrize("fault", ["cut", "moderation", "server_error"])
def test_one_shot_chat_is_deleted_even_when_the_turn_fails(client, auth, emulator, fault):
    emulator.state.add_fault(fault)
    chat(client, auth, stream=True).get_data()
    assert wait_until(lambda: all(c["deleted"] for c in emulator.state.chats().values()))
    assert len(emulator.state.chats()) == 1


def test_a_cut_stream_ends_with_an_error_not_stop(client, auth, emulator):
    emulator.state.add_fault("cut")
    events = sse_events(chat(client, auth, stream=True).get_data())
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_cut"


def test_token_check_works_in_legacy_mode(client, account):
    answer = client.post("/token/check", json={"token": account.refresh_token}).get_json()
    assert answer["live"] is True and answer["checked"] is True
    assert client.post("/token/check", json={"token": "dead"}).get_json()["live"] is False


def test_models_list_the_legacy_flags(client):
    ids = [m["id"] for m in client.get("/v1/models").get_json()["data"]]
    assert {"kimi", "kimi-search", "kimi-research", "kimi-k1", "kimi-math"} <= set(ids)
