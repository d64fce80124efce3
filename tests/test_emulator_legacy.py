"""The emulator's 2024 ``legacy`` routes (REST + Server-Sent Events), over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from kimi_emulator import EmulatorServer, IssuedTokens

REFRESH_PATH = "/api/auth/token/refresh"
NEW_CHAT = {
    "name": "未命名会话",
    "is_example": False,
    "enter_method": "new_chat",
    "kimiplus_id": "kimi",
}
DONE_EVENTS = [{"event": "done"}, {"event": "all_done"}]


@pytest.fixture
def alice(emulator: EmulatorServer) -> IssuedTokens:
    return emulator.state.create_user("alice")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_chat(url: str, user: IssuedTokens) -> str:
    response = requests.post(url + "/api/chat", json=NEW_CHAT, headers=bearer(user.access_token))
    assert response.status_code == 200
    return response.json()["id"]


def completion(
    url: str, user: IssuedTokens, chat_id: str, prompt: str = "hi", **extra: Any
) -> requests.Response:
    body = {
        "kimiplus_id": "kimi",
        "messages": [{"role": "user", "content": prompt}],
        "refs": [],
        "refs_file": [],
        "use_search": False,
        "extend": {"sidebar": True},
        **extra,
    }
    path = f"/api/chat/{chat_id}/completion/stream"
    return requests.post(
        url + path, json=body, headers=bearer(user.access_token), stream=True, timeout=10
    )


def continuation(url: str, user: IssuedTokens, chat_id: str, segment_id: str) -> requests.Response:
    return completion(url, user, chat_id, " ", segment_id=segment_id, action="continue")


def parse_events(data: bytes) -> list[dict[str, Any]]:
    """Decode whole ``data:`` lines only: a UTF-8 character may span two reads."""
    events = []
    for block in data.split(b"\n\n"):
        line = block.decode("utf-8")
        if line:
            assert line.startswith("data: ")
            events.append(json.loads(line[len("data: ") :]))
    return events


def read_events(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return parse_events(b"".join(response.iter_content(None)))


def answer_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in events if event["event"] == "cmpl")


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


def test_refresh_leaves_the_old_token_usable_and_user_names_the_account(emulator, alice) -> None:
    first = requests.get(emulator.url + REFRESH_PATH, headers=bearer(alice.refresh_token))
    again = requests.get(emulator.url + REFRESH_PATH, headers=bearer(alice.refresh_token))
    assert first.status_code == again.status_code == 200
    issued = first.json()
    assert set(issued) == {"access_token", "refresh_token"}
    assert issued["refresh_token"] != alice.refresh_token

    newest = requests.get(emulator.url + REFRESH_PATH, headers=bearer(issued["refresh_token"]))
    assert newest.status_code == 200
    user = requests.get(emulator.url + "/api/user", headers=bearer(issued["access_token"]))
    assert user.json() == {"id": alice.user_id, "name": "alice", "phone": ""}


@pytest.mark.parametrize("token", ["access", "garbage", "none"])
def test_a_bad_refresh_token_is_401_auth_token_invalid(emulator, alice, token) -> None:
    headers = {"access": bearer(alice.access_token), "garbage": bearer("x.y.z"), "none": {}}[token]
    response = requests.get(emulator.url + REFRESH_PATH, headers=headers)
    assert response.status_code == 401
    assert response.json()["error_type"] == "auth.token.invalid"


def test_a_route_called_with_a_refresh_token_is_401(emulator, alice) -> None:
    response = requests.get(emulator.url + "/api/user", headers=bearer(alice.refresh_token))
    assert response.status_code == 401
    assert set(response.json()) == {"error_type", "message"}


def test_refresh_down_fault_is_a_500(emulator, alice) -> None:
    emulator.state.add_fault("refresh_down")
    response = requests.get(emulator.url + REFRESH_PATH, headers=bearer(alice.refresh_token))
    assert response.status_code == 500
    assert response.json()["error_type"] == "internal"


def test_created_chat_has_a_kimi_style_id_and_is_recorded(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)

    assert len(chat_id) == 20 and chat_id.isalnum() and chat_id == chat_id.lower()
    chat = emulator.state.chats()[chat_id]
    assert (chat["user_id"], chat["kimiplus_id"], chat["protocol"]) == (
        alice.user_id,
        "kimi",
        "legacy",
    )
    assert not chat["deleted"]


def test_completion_streams_the_answer_and_ends_with_done_and_all_done(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    events = read_events(completion(emulator.url, alice, chat_id, "Hi there\nWhat is 2+2?"))

    assert answer_of(events) == "Emulator reply to: What is 2+2?"
    assert kinds(events)[:2] == ["req", "resp"]
    assert {"ping", "debug", "rename"} <= set(kinds(events))
    assert events[-2:] == DONE_EVENTS
    req, resp = events[0], events[1]
    assert req["content"] == "Hi there\nWhat is 2+2?" and req["refs"] == []
    assert req["group_id"] == resp["group_id"] and req["id"] != resp["id"]
    messages = emulator.state.chats()[chat_id]["messages"]
    assert [(m["id"], m["role"]) for m in messages] == [
        (req["id"], "user"),
        (resp["id"], "assistant"),
    ]
    assert messages[1]["text"] == "Emulator reply to: What is 2+2?"


def test_a_chinese_answer_split_into_3_byte_reads_decodes_when_joined(emulator, alice) -> None:
    emulator.state.configure(split_frames=True)
    chat_id = create_chat(emulator.url, alice)
    response = completion(emulator.url, alice, chat_id, "你好，今天天气怎么样？")

    chunks = list(response.iter_content(None))
    assert max(len(chunk) for chunk in chunks) <= 3
    events = parse_events(b"".join(chunks))
    assert answer_of(events) == "Emulator reply to: 你好，今天天气怎么样？"
    assert events[-2:] == DONE_EVENTS


def test_search_streams_its_progress_and_two_results(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    events = read_events(completion(emulator.url, alice, chat_id, "weather?", use_search=True))

    assert [e["msg"] for e in events if e["event"] == "search_plus"] == [
        {"type": "start"},
        {"type": "get_res", "title": "Weather report 1", "url": "https://example.com/weather/1"},
        {"type": "get_res", "title": "Weather report 2", "url": "https://example.com/weather/2"},
        {"type": "answer", "successNum": 2},
    ]
    assert answer_of(events) == "Emulator reply to: weather?"


def test_a_length_stopped_answer_is_finished_by_one_continuation(emulator, alice) -> None:
    emulator.state.add_fault("length")
    chat_id = create_chat(emulator.url, alice)
    first = read_events(completion(emulator.url, alice, chat_id, "tell me a long story"))
    assert kinds(first)[-3:] == ["length", "done", "all_done"]

    rest = read_events(continuation(emulator.url, alice, chat_id, first[0]["id"]))

    assert kinds(rest)[0] == "resp" and rest[0]["id"] == first[1]["id"]
    assert "length" not in kinds(rest) and rest[-2:] == DONE_EVENTS
    assert answer_of(first) + answer_of(rest) == "Emulator reply to: tell me a long story"
    assert emulator.state.chats()[chat_id]["messages"][1]["text"] == answer_of(first + rest)


def test_length_twice_needs_a_second_continuation(emulator, alice) -> None:
    emulator.state.add_fault("length_twice")
    chat_id = create_chat(emulator.url, alice)
    first = read_events(completion(emulator.url, alice, chat_id, "tell me a long story"))
    segment_id = first[0]["id"]

    second = read_events(continuation(emulator.url, alice, chat_id, segment_id))
    assert "length" in kinds(second)
    third = read_events(continuation(emulator.url, alice, chat_id, segment_id))

    assert "length" not in kinds(third)
    text = answer_of(first) + answer_of(second) + answer_of(third)
    assert text == "Emulator reply to: tell me a long story"


def test_continuing_an_unknown_segment_is_a_validation_error(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    response = continuation(emulator.url, alice, chat_id, "nope")
    assert response.status_code == 400
    assert response.json()["error_type"] == "validation.error"


@pytest.mark.parametrize("messages", [[], None, [{"role": "user", "content": "  "}]])
def test_a_completion_without_a_prompt_is_a_validation_error(emulator, alice, messages) -> None:
    chat_id = create_chat(emulator.url, alice)
    response = completion(emulator.url, alice, chat_id, messages=messages)
    assert response.status_code == 400
    assert response.json()["error_type"] == "validation.error"


def test_cut_fault_stops_after_the_first_piece_without_done(emulator, alice) -> None:
    emulator.state.add_fault("cut")
    chat_id = create_chat(emulator.url, alice)
    events = read_events(completion(emulator.url, alice, chat_id, "tell me more"))

    assert kinds(events)[-1] == "cmpl" and answer_of(events) == "Emulator"
    assert "done" not in kinds(events)


@pytest.mark.parametrize(
    "fault, error_type, ending",
    [
        ("stream_error", "chat.completion.interrupted", []),
        ("moderation", "content_filter", DONE_EVENTS),
    ],
)
def test_in_stream_errors_follow_the_first_piece(
    emulator, alice, fault, error_type, ending
) -> None:
    emulator.state.add_fault(fault)
    chat_id = create_chat(emulator.url, alice)
    events = read_events(completion(emulator.url, alice, chat_id, "tell me more"))

    error_at = kinds(events).index("error")
    assert kinds(events)[error_at - 1] == "cmpl" and answer_of(events) == "Emulator"
    assert events[error_at]["error"]["error_type"] == error_type
    assert events[error_at + 1 :] == ending


def test_limit_in_stream_is_a_200_with_only_a_rate_limit_event(emulator, alice) -> None:
    emulator.state.add_fault("limit_in_stream")
    chat_id = create_chat(emulator.url, alice)
    events = read_events(completion(emulator.url, alice, chat_id))
    assert kinds(events) == ["error"]
    assert events[0]["error"]["error_type"] == "chat.rate_limit"


@pytest.mark.parametrize(
    "fault, status, error_type",
    [
        ("unauthorized", 401, "auth.token.invalid"),
        ("limit", 429, "chat.rate_limit"),
        ("server_error", 500, "internal"),
        ("busy", 400, "chat.user_stream_pushing"),
    ],
)
def test_http_faults_answer_legacy_error_bodies(emulator, alice, fault, status, error_type) -> None:
    emulator.state.add_fault(fault)
    chat_id = create_chat(emulator.url, alice)
    response = completion(emulator.url, alice, chat_id)
    assert response.status_code == status
    assert response.json()["error_type"] == error_type
    assert emulator.state.faults() == []


def test_garbage_fault_is_an_html_page(emulator, alice) -> None:
    emulator.state.add_fault("garbage")
    response = completion(emulator.url, alice, create_chat(emulator.url, alice))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html>gateway error</html>"


def test_a_chat_is_busy_while_its_answer_streams(emulator, alice) -> None:
    emulator.state.add_fault("slow", seconds=0.2)
    chat_id = create_chat(emulator.url, alice)
    streaming = completion(emulator.url, alice, chat_id, "slowly")
    next(streaming.iter_content(None))

    busy = completion(emulator.url, alice, chat_id, "again")

    assert busy.status_code == 400
    assert busy.json()["error_type"] == "chat.user_stream_pushing"
    streaming.close()


def test_a_deleted_chat_is_not_found(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    deleted = requests.delete(
        f"{emulator.url}/api/chat/{chat_id}", headers=bearer(alice.access_token)
    )
    assert deleted.status_code == 200 and deleted.json() == {}
    assert emulator.state.chats()[chat_id]["deleted"]

    response = completion(emulator.url, alice, chat_id)
    again = requests.delete(
        f"{emulator.url}/api/chat/{chat_id}", headers=bearer(alice.access_token)
    )
    assert response.status_code == again.status_code == 404
    assert response.json()["error_type"] == again.json()["error_type"] == "chat.not_found"


def test_another_users_chat_is_forbidden(emulator, alice) -> None:
    bob = emulator.state.create_user("bob")
    response = completion(emulator.url, bob, create_chat(emulator.url, alice))
    assert response.status_code == 403
    assert response.json()["error_type"] == "chat.forbidden"


def test_research_usage_is_full_until_the_quota_is_used_up(emulator, alice) -> None:
    url, headers = emulator.url + "/api/chat/research/usage", bearer(alice.access_token)
    assert requests.get(url, headers=headers).json() == {"remain": 5, "total": 5, "used": 0}

    emulator.state.add_fault("research_exhausted")
    assert requests.get(url, headers=headers).json() == {"remain": 0, "total": 5, "used": 5}
    assert requests.get(url, headers=headers).json()["remain"] == 5

    emulator.state.configure(research_remain=0)
    assert requests.get(url, headers=headers).json()["remain"] == 0


def test_call_log_records_legacy_calls_and_headers_but_never_the_token(emulator, alice) -> None:
    create_chat(emulator.url, alice)
    headers = {
        **bearer(alice.access_token),
        "X-Msh-Platform": "web",
        "X-Traffic-Id": alice.user_id,
        "R-Timezone": "Asia/Shanghai",
        "Referer": "https://kimi.moonshot.cn/",
    }
    requests.get(emulator.url + "/api/user", headers=headers)

    calls = emulator.state.calls()
    assert [(c["method"], c["path"], c["status"], c["user_id"]) for c in calls] == [
        ("POST", "/api/chat", 200, alice.user_id),
        ("GET", "/api/user", 200, alice.user_id),
    ]
    assert calls[0]["body"] == NEW_CHAT and calls[0]["auth"]
    assert calls[1]["headers"]["R-Timezone"] == "Asia/Shanghai"
    assert calls[1]["headers"]["X-Traffic-Id"] == alice.user_id
    assert alice.access_token not in str(calls)
