"""The Kimi web-backend emulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from kimi.upstream.connect import END_STREAM_FLAG, HEADER_SIZE, Frame, FrameDecoder, encode_frame
from kimi_emulator import EmulatorServer, IssuedTokens

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
REFRESH_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
SEARCH_TOOL = {"type": "TOOL_TYPE_SEARCH", "search": {}}


@pytest.fixture
def alice(emulator: EmulatorServer) -> IssuedTokens:
    """A fresh user of the emulator that ``tests/conftest.py`` starts and resets."""
    return emulator.state.create_user("alice")


def chat_body(prompt: str, chat_id: str = "", parent_id: str = "", **extra: Any) -> bytes:
    message = {"parent_id": parent_id, "role": "user", "blocks": [{"text": {"content": prompt}}]}
    request = {"scenario": "SCENARIO_K2D5", "chat_id": chat_id, "message": message}
    return encode_frame({**request, **extra})


def post_chat(url: str, token: str, body: bytes) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/connect+json"}
    return requests.post(url + CHAT_PATH, data=body, headers=headers, stream=True, timeout=10)


def read_frames(response: requests.Response) -> list[Frame]:
    decoder = FrameDecoder()
    frames = [frame for chunk in response.iter_content(None) for frame in decoder.feed(chunk)]
    assert decoder.pending == 0
    return frames


def text_pieces(frames: list[Frame]) -> list[str]:
    masks = ("block.text", "block.text.content")
    return [f.message["block"]["text"]["content"] for f in frames if f.message.get("mask") in masks]


def answer_of(frames: list[Frame]) -> str:
    return "".join(text_pieces(frames))


def test_refresh_rotates_and_rejects_the_spent_token(emulator: EmulatorServer, alice) -> None:
    first = requests.post(emulator.url + REFRESH_PATH, json={"refresh_token": alice.refresh_token})
    assert first.status_code == 200
    rotated = first.json()["refreshToken"]
    assert rotated != alice.refresh_token

    again = requests.post(emulator.url + REFRESH_PATH, json={"refresh_token": alice.refresh_token})
    assert again.status_code == 401
    assert again.json() == {
        "code": "unauthenticated",
        "message": "invalid claims: refresh token revoked",
    }

    newest = requests.post(emulator.url + REFRESH_PATH, json={"refreshToken": rotated})
    assert newest.status_code == 200
    assert set(newest.json()) == {"accessToken", "refreshToken"}


def test_chat_streams_the_deterministic_answer_and_ends_the_stream(emulator, alice) -> None:
    response = post_chat(emulator.url, alice.access_token, chat_body("Hi there\nWhat is 2+2?"))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/connect+json"
    frames = read_frames(response)
    assert answer_of(frames) == "Emulator reply to: What is 2+2?"
    assert frames[-1].end_stream and frames[-1].message == {}
    assert not any(frame.end_stream for frame in frames[:-1])


def test_search_answer_splits_citation_markers_across_frames(emulator, alice) -> None:
    body = chat_body("weather?", tools=[SEARCH_TOOL])
    frames = read_frames(post_chat(emulator.url, alice.access_token, body))

    assert any(piece.count("\U0001f6e0") == 1 for piece in text_pieces(frames))
    assert any(piece.endswith("[^") for piece in text_pieces(frames))
    assert answer_of(frames) == (
        "Emulator reply to: weather? According to the web\U0001f6e0web_search:1#5\U0001f6e0"
        " it is sunny\ue3a0cite:2\ue3a8 and mild[^3^][^2^]."
    )


def test_continuation_needs_the_last_assistant_message_as_parent(emulator, alice) -> None:
    frames = read_frames(post_chat(emulator.url, alice.access_token, chat_body("first")))
    chat_id = frames[0].message["chat"]["id"]
    reply_id = frames[2].message["message"]["id"]

    wrong = post_chat(emulator.url, alice.access_token, chat_body("second", chat_id, "nope"))
    assert wrong.status_code == 400
    assert wrong.json()["message"] == "parent_id does not match the last message"

    right = post_chat(emulator.url, alice.access_token, chat_body("second", chat_id, reply_id))
    assert answer_of(read_frames(right)) == "Emulator reply to: second"


def test_cut_fault_stream_stops_without_an_end_stream_frame(emulator, alice) -> None:
    emulator.state.add_fault("cut")

    frames = read_frames(post_chat(emulator.url, alice.access_token, chat_body("tell me more")))

    assert answer_of(frames).startswith("Emulator")
    assert not any(frame.end_stream or "done" in frame.message for frame in frames)


def test_split_frames_writes_chunks_smaller_than_a_frame(emulator, alice) -> None:
    emulator.state.configure(split_frames=True)
    response = post_chat(emulator.url, alice.access_token, chat_body("hello"))

    chunks = list(response.iter_content(None))
    assert max(len(chunk) for chunk in chunks) < HEADER_SIZE
    frames = FrameDecoder().feed(b"".join(chunks))
    assert answer_of(frames) == "Emulator reply to: hello"


def test_chat_is_busy_while_a_reply_streams_and_free_once_the_client_leaves(
    emulator, alice
) -> None:
    emulator.state.add_fault("slow", seconds=0.2)
    streaming = post_chat(emulator.url, alice.access_token, chat_body("slowly"))
    first = next(streaming.iter_content(None))
    chat_id = FrameDecoder().feed(first)[0].message["chat"]["id"]

    busy = post_chat(emulator.url, alice.access_token, chat_body("again", chat_id, ""))
    assert busy.status_code == 409
    assert busy.json()["code"] == "aborted"

    streaming.close()
    deadline = time.monotonic() + 5
    while emulator.state.chats()[chat_id]["streaming"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not emulator.state.chats()[chat_id]["streaming"]


def test_call_log_records_the_call_but_never_the_token(emulator, alice) -> None:
    read_frames(post_chat(emulator.url, alice.access_token, chat_body("logged")))

    calls = requests.get(emulator.url + "/_emulator/calls").json()["calls"]
    assert [(c["path"], c["status"], c["user_id"], c["auth"]) for c in calls] == [
        (CHAT_PATH, 200, alice.user_id, True)
    ]
    assert calls[0]["body"]["message"]["blocks"][0]["text"]["content"] == "logged"
    assert alice.access_token not in str(calls)


def test_admin_rejects_an_unknown_fault(emulator) -> None:
    response = requests.post(emulator.url + "/_emulator/faults", json={"fault": "meteor"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"


@pytest.mark.parametrize(
    "body",
    [
        chat_body("cut short")[:-2],
        chat_body("one") + chat_body("two"),
        encode_frame({"message": {}}, flags=END_STREAM_FLAG),
        b"\x00\x00\x00\x00\x05{nope",
    ],
    ids=["truncated", "two frames", "end-of-stream flag", "not JSON"],
)
def test_chat_refuses_a_body_that_is_not_exactly_one_plain_frame(emulator, alice, body) -> None:
    response = post_chat(emulator.url, alice.access_token, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert emulator.state.chats() == {}
