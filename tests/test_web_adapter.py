"""The web adapter against a mocked kimi.com: requests sent, answers and failures mapped."""

from __future__ import annotations

import base64
import json

import pytest
import requests
import responses

from kimi.errors import (
    ConversationBusy,
    RateLimited,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamTimeout,
)
from kimi.events import ChatOpened, Finish, ReplyStarted, TextDelta
from kimi.history import Message
from kimi.models import parse_model
from kimi.settings import Settings
from kimi.upstream.base import Session, TokenGrant, TurnTarget
from kimi.upstream.connect import END_STREAM_FLAG, FrameDecoder, encode_frame
from kimi.upstream.web import WebUpstream

BASE = "https://kimi.test"
AUTH = "https://auth.kimi.test"
REFRESH_URL = AUTH + "/api/account.gateway.v1.AuthService/RefreshToken"
CHAT_URL = BASE + "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
DELETE_URL = BASE + "/apiv2/kimi.chat.v1.ChatService/DeleteChat"
SUBSCRIPTION_URL = BASE + "/apiv2/kimi.gateway.order.v1.SubscriptionService/GetSubscription"
MODELS_URL = BASE + "/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"
CONNECT = "application/connect+json"


def b64url(data: dict) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fake_jwt(**claims) -> str:
    return f"{b64url({'alg': 'HS512', 'typ': 'JWT'})}.{b64url(claims)}.fakesig"


ACCESS = fake_jwt(sub="user123", typ="access", exp=2_000_000_000, device_id="42", ssid="7")
ROTATED = fake_jwt(sub="user123", typ="refresh", exp=2_100_000_000, jti="new")
OLD_REFRESH = fake_jwt(sub="user123", typ="refresh", exp=2_050_000_000, jti="old")
SESSION = Session(access_token=ACCESS, user_id="user123", device_id="4242", session_id="77")

TURN_FRAMES = [
    {"chat": {"id": "chat-1", "name": "hi"}},
    {
        "op": "set",
        "mask": "message",
        "message": {"id": "r1", "role": "assistant", "status": "MESSAGE_STATUS_GENERATING"},
    },
    {"op": "set", "mask": "block.text", "block": {"id": "b2", "text": {"content": "Hello"}}},
    {
        "op": "append",
        "mask": "block.text.content",
        "block": {"id": "b2", "text": {"content": " there"}},
    },
    {
        "op": "set",
        "mask": "message.status",
        "message": {"id": "r1", "status": "MESSAGE_STATUS_COMPLETED"},
    },
    {"eventOffset": 5, "done": {}},
]


def stream_body(frames: list[dict], end: bool = True) -> bytes:
    body = b"".join(encode_frame(f) for f in frames)
    return body + (encode_frame({}, flags=END_STREAM_FLAG) if end else b"")


@pytest.fixture
def upstream(tmp_path) -> WebUpstream:
    settings = Settings(base_url=BASE, auth_url=AUTH, state_path=str(tmp_path / "state.db"))
    return WebUpstream(settings)


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


def sent_chat_body(call) -> dict:
    [frame] = FrameDecoder().feed(call.request.body)
    assert frame.flags == 0
    return frame.message


def run_turn(upstream, mocked, model="kimi", body=None, **target):
    mocked.add(
        responses.POST,
        CHAT_URL,
        body=stream_body(TURN_FRAMES) if body is None else body,
        content_type=CONNECT,
    )
    prompt = target.pop("prompt", "hi")
    messages = (Message("user", prompt),)
    turn = TurnTarget(messages=messages, options=parse_model(model), **target)
    events = list(upstream.stream_turn(SESSION, turn))
    return events, mocked.calls[-1]


# --- refresh ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"accessToken": ACCESS, "refreshToken": ROTATED},
        {"access_token": ACCESS, "refresh_token": ROTATED},
    ],
    ids=["camel", "snake"],
)
def test_refresh_returns_the_rotated_token_and_access_expiry(upstream, mocked, answer):
    mocked.add(responses.POST, REFRESH_URL, json=answer)
    grant = upstream.refresh(OLD_REFRESH)
    assert grant == TokenGrant(
        access_token=ACCESS, refresh_token=ROTATED, expires_at=2_000_000_000, user_id="user123"
    )


def test_refresh_posts_the_refresh_token_to_the_auth_host_without_authorization(upstream, mocked):
    mocked.add(responses.POST, REFRESH_URL, json={"accessToken": ACCESS})
    upstream.refresh(OLD_REFRESH)
    [call] = mocked.calls
    assert json.loads(call.request.body) == {"refresh_token": OLD_REFRESH}
    assert "Authorization" not in call.request.headers


def test_refresh_without_a_rotated_token_keeps_the_old_one(upstream, mocked):
    mocked.add(responses.POST, REFRESH_URL, json={"accessToken": ACCESS})
    assert upstream.refresh(OLD_REFRESH).refresh_token == OLD_REFRESH


def test_refresh_rejected_with_401_raises_auth_rejected(upstream, mocked):
    mocked.add(responses.POST, REFRESH_URL, status=401, json={"code": "unauthenticated"})
    with pytest.raises(UpstreamAuthRejected):
        upstream.refresh(OLD_REFRESH)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body": "<html>maintenance</html>", "content_type": "text/html"},
        {"json": {"something": "else"}},
    ],
    ids=["html", "no-access-token"],
)
def test_refresh_answer_without_usable_json_raises_upstream_error(upstream, mocked, kwargs):
    mocked.add(responses.POST, REFRESH_URL, **kwargs)
    with pytest.raises(UpstreamError):
        upstream.refresh(OLD_REFRESH)


# --- stream_turn: the request -------------------------------------------------------------


def test_new_turn_sends_one_frame_with_the_prompt_in_the_first_block(upstream, mocked):
    _, call = run_turn(upstream, mocked, prompt="What is the weather?")
    body = sent_chat_body(call)
    assert body["message"]["blocks"][0]["text"]["content"] == "What is the weather?"
    assert body["message"]["role"] == "user"
    assert body["chat_id"] == "" and body["message"]["parent_id"] == ""


def test_continued_turn_sends_chat_id_and_parent_id(upstream, mocked):
    _, call = run_turn(upstream, mocked, chat_id="chat-1", parent_id="r0")
    body = sent_chat_body(call)
    assert body["chat_id"] == "chat-1"
    assert body["message"]["parent_id"] == "r0"


@pytest.mark.parametrize(
    "model, tools",
    [("kimi", []), ("kimi-search", [{"type": "TOOL_TYPE_SEARCH", "search": {}}])],
)
def test_search_tool_is_sent_only_for_search_models(upstream, mocked, model, tools):
    _, call = run_turn(upstream, mocked, model=model)
    assert sent_chat_body(call)["tools"] == tools


@pytest.mark.parametrize("model, thinking", [("kimi", False), ("kimi-thinking", True)])
def test_thinking_option_follows_the_model(upstream, mocked, model, thinking):
    _, call = run_turn(upstream, mocked, model=model)
    assert sent_chat_body(call)["options"]["thinking"] is thinking


@pytest.mark.parametrize(
    "model, scenario",
    [("kimi", "SCENARIO_K2D5"), ("kimi-k2", "SCENARIO_K2"), ("kimi-k2.5", "SCENARIO_K2D5")],
)
def test_scenario_follows_the_model(upstream, mocked, model, scenario):
    _, call = run_turn(upstream, mocked, model=model)
    body = sent_chat_body(call)
    assert body["scenario"] == body["message"]["scenario"] == scenario


def test_agent_model_sends_kimiplus_id(upstream, mocked):
    agent = "cqbk2ch4hv2h8svs4ag0"
    _, call = run_turn(upstream, mocked, model=agent)
    assert sent_chat_body(call)["kimiplusId"] == agent


def test_plain_model_sends_no_kimiplus_id(upstream, mocked):
    _, call = run_turn(upstream, mocked)
    assert "kimiplusId" not in sent_chat_body(call)


def test_chat_request_carries_the_web_client_headers(upstream, mocked):
    _, call = run_turn(upstream, mocked)
    headers = call.request.headers
    assert headers["Authorization"] == f"Bearer {ACCESS}"
    assert headers["Content-Type"] == CONNECT
    assert headers["Connect-Protocol-Version"] == "1"
    assert headers["X-Msh-Platform"] == "web"
    assert headers["X-Traffic-Id"] == "user123"
    assert headers["X-Msh-Device-Id"] == "4242"


def test_chat_request_never_asks_for_br_or_zstd(upstream, mocked):
    _, call = run_turn(upstream, mocked)
    encoding = call.request.headers.get("Accept-Encoding", "")
    assert "br" not in encoding and "zstd" not in encoding


# --- stream_turn: the answer --------------------------------------------------------------


def test_streamed_frames_become_the_turn_events(upstream, mocked):
    events, _ = run_turn(upstream, mocked)
    assert events == [
        ChatOpened("chat-1"),
        ReplyStarted("r1"),
        TextDelta("Hello"),
        TextDelta(" there"),
        Finish("stop"),
    ]


@pytest.mark.parametrize(
    "status, error_class",
    [
        (401, UpstreamAuthRejected),
        (429, RateLimited),
        (409, ConversationBusy),
        (500, UpstreamError),
    ],
)
def test_http_failure_maps_to_the_service_error(upstream, mocked, status, error_class):
    mocked.add(responses.POST, CHAT_URL, status=status, json={"code": "x"})
    with pytest.raises(error_class):
        list(
            upstream.stream_turn(SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi")))
        )


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "Kimi failed: HTTP 502"),
        ({"code": "internal", "message": "backend down"}, "Kimi failed: backend down (HTTP 502)"),
    ],
    ids=["no-message", "kimi-message"],
)
def test_a_server_failure_says_the_status_once(upstream, mocked, body, message):
    mocked.add(responses.POST, CHAT_URL, status=502, json=body)
    with pytest.raises(UpstreamError) as caught:
        list(
            upstream.stream_turn(SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi")))
        )
    assert caught.value.message == message


def test_429_retry_after_header_is_kept(upstream, mocked):
    mocked.add(responses.POST, CHAT_URL, status=429, json={}, headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as caught:
        list(
            upstream.stream_turn(SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi")))
        )
    assert caught.value.retry_after == 30


def test_html_page_with_200_is_an_upstream_error(upstream, mocked):
    mocked.add(responses.POST, CHAT_URL, body="<html>captcha</html>", content_type="text/html")
    with pytest.raises(UpstreamError):
        list(
            upstream.stream_turn(SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi")))
        )


def test_stream_ending_without_completion_is_upstream_cut(upstream, mocked):
    body = stream_body(TURN_FRAMES[:3], end=False)
    with pytest.raises(UpstreamError) as caught:
        run_turn(upstream, mocked, body=body)
    assert caught.value.code == "upstream_cut"


def test_stream_cut_after_the_user_message_completed_is_upstream_cut(upstream, mocked):
    user_done = {
        "op": "set",
        "mask": "message",
        "message": {"id": "u1", "role": "user", "status": "MESSAGE_STATUS_COMPLETED"},
    }
    frames = [TURN_FRAMES[0], user_done, *TURN_FRAMES[1:3]]
    with pytest.raises(UpstreamError) as caught:
        run_turn(upstream, mocked, body=stream_body(frames, end=False))
    assert caught.value.code == "upstream_cut"


def test_in_stream_error_frame_raises_after_the_text_so_far(upstream, mocked):
    error = {"error": {"code": "resource_exhausted", "message": "too many"}}
    mocked.add(
        responses.POST,
        CHAT_URL,
        body=stream_body(TURN_FRAMES[:3]) + encode_frame(error, flags=END_STREAM_FLAG),
        content_type=CONNECT,
    )
    seen = []
    with pytest.raises(RateLimited):
        for event in upstream.stream_turn(
            SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi"))
        ):
            seen.append(event)
    assert TextDelta("Hello") in seen


def test_malformed_frames_are_an_upstream_error(upstream, mocked):
    body = b"\x00\x00\x00\x00\x05nope!"
    with pytest.raises(UpstreamError):
        run_turn(upstream, mocked, body=body)


@pytest.mark.parametrize(
    "failure, error_class",
    [
        (requests.Timeout("read timed out"), UpstreamTimeout),
        (requests.ConnectionError("refused"), UpstreamError),
    ],
)
def test_transport_failures_map_to_service_errors(upstream, mocked, failure, error_class):
    mocked.add(responses.POST, CHAT_URL, body=failure)
    with pytest.raises(error_class):
        list(
            upstream.stream_turn(SESSION, TurnTarget((Message("user", "hi"),), parse_model("kimi")))
        )


# --- other calls --------------------------------------------------------------------------


def test_delete_chat_posts_the_chat_id(upstream, mocked):
    mocked.add(responses.POST, DELETE_URL, json={})
    upstream.delete_chat(SESSION, "chat-1")
    [call] = mocked.calls
    assert json.loads(call.request.body) == {"chat_id": "chat-1"}
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS}"


@pytest.mark.parametrize(
    "answer, alive",
    [({"subscription": {"userId": "user123", "userName": "a"}}, True), ({}, False)],
)
def test_check_is_true_only_with_a_subscription(upstream, mocked, answer, alive):
    mocked.add(responses.POST, SUBSCRIPTION_URL, json=answer)
    assert upstream.check(SESSION) is alive


def test_check_with_a_dead_token_raises_auth_rejected(upstream, mocked):
    mocked.add(responses.POST, SUBSCRIPTION_URL, status=401, json={})
    with pytest.raises(UpstreamAuthRejected):
        upstream.check(SESSION)


def test_list_models_maps_the_live_catalog_to_model_ids(upstream, mocked):
    catalog = {
        "availableModels": [
            {"scenario": "SCENARIO_K2", "thinking": False, "displayName": "K2"},
            {"scenario": "SCENARIO_OK_COMPUTER", "thinking": False},
            {"displayName": "no scenario"},
        ]
    }
    mocked.add(responses.POST, MODELS_URL, json=catalog)
    assert upstream.list_models(SESSION) == ["kimi-k2", "kimi-ok-computer"]


def test_list_models_names_k2d5_like_the_static_catalog(upstream, mocked):
    catalog = {
        "availableModels": [
            {"scenario": "SCENARIO_K2D5", "thinking": False},
            {"scenario": "SCENARIO_K2D5", "thinking": True},
        ]
    }
    mocked.add(responses.POST, MODELS_URL, json=catalog)
    ids = upstream.list_models(SESSION)
    assert ids == ["kimi-k2.5", "kimi-k2.5-thinking"]
    assert set(ids) <= set(upstream.static_models())
