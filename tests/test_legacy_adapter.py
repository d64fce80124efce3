"""The legacy adapter against a mocked kimi.moonshot.cn: requests sent, answers and failures."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
import requests
import responses

from kimi.errors import (
    ConversationBusy,
    NotFound,
    RateLimited,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamTimeout,
)
from kimi.events import ChatOpened, Citation, Finish, ReplyStarted, TextDelta
from kimi.history import FOCUS_HINT, Message
from kimi.models import parse_model
from kimi.settings import Settings
from kimi.upstream.base import Session, TokenGrant, TurnTarget
from kimi.upstream.legacy import MAX_CONTINUATIONS, LegacyUpstream

BASE = "https://kimi.legacy.test"
REFRESH_URL = BASE + "/api/auth/token/refresh"
USER_URL = BASE + "/api/user"
CHAT_URL = BASE + "/api/chat"
USAGE_URL = BASE + "/api/chat/research/usage"
CHAT_ID = "cq1a2b3c4d5e6f7g8h9i"
COMPLETION_URL = f"{CHAT_URL}/{CHAT_ID}/completion/stream"
AGENT = "cqbk2ch4hv2h8svs4ag0"
K1_AGENT = "crm40ee9e5jvhsn7ptcg"
SSE = "text/event-stream"


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def fake_jwt(**claims) -> str:
    return f"{b64url({'alg': 'HS512', 'typ': 'JWT'})}.{b64url(claims)}.fakesig"


ACCESS = fake_jwt(sub="user-legacy", typ="access", exp=2_000_000_000)
OLD_REFRESH = fake_jwt(sub="user-legacy", typ="refresh", exp=2_050_000_000, jti="old")
ROTATED = fake_jwt(sub="user-legacy", typ="refresh", exp=2_100_000_000, jti="new")
SESSION = Session(access_token=ACCESS, user_id="user-legacy")

REQ = {"event": "req", "id": "seg-1", "group_id": "g1", "content": "hi", "refs": []}
RESP = {"event": "resp", "id": "reply-1", "group_id": "g1"}
DONE = [{"event": "done"}, {"event": "all_done"}]


def cmpl(text: str) -> dict:
    return {"event": "cmpl", "text": text}


def sse(*events, separator: str = "\n\n") -> bytes:
    """An SSE body as the legacy backend writes it: one ``data: {json}`` line per event."""
    return "".join(f"data: {json.dumps(e, ensure_ascii=False)}{separator}" for e in events).encode()


ANSWER = sse(
    REQ,
    RESP,
    {"event": "ping"},
    cmpl("Hello"),
    {"event": "search_plus", "msg": {"type": "get_res", "title": "T", "url": "https://t.test"}},
    cmpl(" there"),
    *DONE,
)


class ChunkedBody(io.BufferedReader):
    """A response body handed out one network read at a time, the way a socket delivers it."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__(io.BytesIO(b""))
        self._chunks = list(chunks)

    def read(self, size: int | None = -1) -> bytes:
        if not self._chunks:
            self.close()
            return b""
        return self._chunks.pop(0)


@pytest.fixture
def upstream(tmp_path) -> LegacyUpstream:
    settings = Settings(
        protocol="legacy", base_url=BASE, auth_url=BASE, state_path=str(tmp_path / "s.db")
    )
    return LegacyUpstream(settings)


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


def add_chat(mocked, chat_id: str = CHAT_ID) -> None:
    mocked.add(responses.POST, CHAT_URL, json={"id": chat_id, "name": "未命名会话"})


def add_completion(mocked, body=ANSWER) -> None:
    mocked.add(responses.POST, COMPLETION_URL, body=body, content_type=SSE)


def target(model: str = "kimi", prompt: str = "hi", **kwargs) -> TurnTarget:
    messages = kwargs.pop("messages", (Message("user", prompt),))
    return TurnTarget(messages=tuple(messages), options=parse_model(model), **kwargs)


def run_turn(upstream, mocked, model: str = "kimi", body=ANSWER, **kwargs) -> list:
    """A new-chat turn against a mocked backend; returns its events."""
    if "research" in model:
        mocked.add(responses.GET, USAGE_URL, json={"remain": 3, "total": 3, "used": 0})
    add_chat(mocked)
    add_completion(mocked, body)
    return list(upstream.stream_turn(SESSION, target(model, **kwargs)))


def calls_to(mocked, method: str, url: str) -> list:
    return [c for c in mocked.calls if c.request.method == method and c.request.url == url]


def completion_bodies(mocked) -> list[dict]:
    return [json.loads(c.request.body) for c in calls_to(mocked, "POST", COMPLETION_URL)]


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --- refresh ------------------------------------------------------------------------------


def test_refresh_exchanges_the_refresh_token_then_reads_the_user(upstream, mocked):
    mocked.add(responses.GET, REFRESH_URL, json={"access_token": ACCESS, "refresh_token": ROTATED})
    mocked.add(responses.GET, USER_URL, json={"id": "user-legacy", "name": "alice"})
    grant = upstream.refresh(OLD_REFRESH)
    assert grant == TokenGrant(
        access_token=ACCESS, refresh_token=ROTATED, expires_at=2_000_000_000, user_id="user-legacy"
    )
    refresh_call, user_call = mocked.calls
    assert refresh_call.request.url == REFRESH_URL
    assert refresh_call.request.headers["Authorization"] == f"Bearer {OLD_REFRESH}"
    assert user_call.request.url == USER_URL
    assert user_call.request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_refresh_of_an_access_token_without_expiry_lasts_about_five_minutes(upstream, mocked):
    mocked.add(responses.GET, REFRESH_URL, json={"access_token": "opaque", "refresh_token": "r2"})
    mocked.add(responses.GET, USER_URL, json={"id": "user-legacy"})
    grant = upstream.refresh(OLD_REFRESH)
    assert grant.access_token == "opaque"
    assert grant.expires_at == pytest.approx(time.time() + 300, abs=10)


def test_refresh_without_a_rotated_token_keeps_the_old_one(upstream, mocked):
    mocked.add(responses.GET, REFRESH_URL, json={"access_token": ACCESS})
    mocked.add(responses.GET, USER_URL, json={"id": "user-legacy"})
    assert upstream.refresh(OLD_REFRESH).refresh_token == OLD_REFRESH


def test_refresh_rejected_raises_auth_rejected_without_reading_the_user(upstream, mocked):
    mocked.add(
        responses.GET,
        REFRESH_URL,
        status=401,
        json={"error_type": "auth.token.invalid", "message": "token expired"},
    )
    with pytest.raises(UpstreamAuthRejected):
        upstream.refresh(OLD_REFRESH)
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body": "<html>maintenance</html>", "content_type": "text/html"},
        {"json": {"refresh_token": ROTATED}},
    ],
    ids=["html", "no-access-token"],
)
def test_refresh_answer_without_an_access_token_is_an_upstream_error(upstream, mocked, kwargs):
    mocked.add(responses.GET, REFRESH_URL, **kwargs)
    with pytest.raises(UpstreamError):
        upstream.refresh(OLD_REFRESH)


# --- stream_turn: the requests ------------------------------------------------------------


@pytest.mark.parametrize(
    "model, kimiplus_id",
    [("kimi", "kimi"), ("kimi-search", "kimi"), (AGENT, AGENT), ("kimi-k1", K1_AGENT)],
)
def test_new_turn_creates_a_chat_for_the_agent_and_completes_in_it(
    upstream, mocked, model, kimiplus_id
):
    run_turn(upstream, mocked, model=model)
    [create] = calls_to(mocked, "POST", CHAT_URL)
    assert json.loads(create.request.body) == {
        "name": "未命名会话",
        "is_example": False,
        "enter_method": "new_chat",
        "kimiplus_id": kimiplus_id,
    }
    [body] = completion_bodies(mocked)
    assert body["kimiplus_id"] == kimiplus_id


def test_new_turn_yields_chat_opened_before_anything_else(upstream, mocked):
    events = run_turn(upstream, mocked)
    assert events[0] == ChatOpened(CHAT_ID)


def test_completion_sends_the_prompt_as_one_user_message_without_refs(upstream, mocked):
    run_turn(upstream, mocked, prompt="What is the weather in 北京?")
    [body] = completion_bodies(mocked)
    assert body["messages"] == [{"role": "user", "content": "What is the weather in 北京?"}]
    assert body["refs"] == []


@pytest.mark.parametrize(
    "model, flags",
    [
        ("kimi", {"use_search": False, "use_math": False, "use_research": False}),
        ("kimi-search", {"use_search": True, "use_math": False, "use_research": False}),
        ("kimi-math", {"use_search": False, "use_math": True, "use_research": False}),
        ("kimi-research", {"use_math": False, "use_research": True}),
    ],
)
def test_completion_flags_follow_the_model_name(upstream, mocked, model, flags):
    run_turn(upstream, mocked, model=model)
    [body] = completion_bodies(mocked)
    assert {key: body[key] for key in flags} == flags


def test_turn_in_an_existing_chat_does_not_create_a_chat(upstream, mocked):
    add_completion(mocked)
    events = list(upstream.stream_turn(SESSION, target(chat_id=CHAT_ID)))
    assert events[0] == ChatOpened(CHAT_ID)
    assert [c.request.url for c in mocked.calls] == [COMPLETION_URL]


def test_urls_in_a_single_user_message_are_tagged(upstream, mocked):
    run_turn(upstream, mocked, prompt="Summarise https://news.test/a?b=1 please")
    [body] = completion_bodies(mocked)
    assert body["messages"][0]["content"] == (
        'Summarise <url id="" type="url" status="" title="" wc="">https://news.test/a?b=1</url>'
        " please"
    )


def test_history_tags_urls_in_user_lines_but_not_in_assistant_lines(upstream, mocked):
    messages = (
        Message("user", "Read http://a.test/x"),
        Message("assistant", "It says hi, see https://b.test/y"),
        Message("user", "And https://c.test/z?"),
    )
    run_turn(upstream, mocked, messages=messages)
    [body] = completion_bodies(mocked)
    tag = '<url id="" type="url" status="" title="" wc="">'
    assert body["messages"][0]["content"] == "\n".join(
        [
            f"user:Read {tag}http://a.test/x</url>",
            "assistant:It says hi, see https://b.test/y",
            FOCUS_HINT,
            f"user:And {tag}https://c.test/z</url>?",
        ]
    )


def test_every_call_of_a_turn_carries_the_account_headers(upstream, mocked):
    run_turn(upstream, mocked, model="kimi-research")
    assert len(mocked.calls) == 3
    for call in mocked.calls:
        headers = call.request.headers
        assert headers["Authorization"] == f"Bearer {ACCESS}"
        assert headers["X-Traffic-Id"] == "user-legacy"
        assert headers["X-Msh-Platform"] == "web"


# --- stream_turn: the answer --------------------------------------------------------------


def test_sse_events_become_the_turn_events_ending_in_one_finish(upstream, mocked):
    events = run_turn(upstream, mocked)
    assert events == [
        ChatOpened(CHAT_ID),
        ReplyStarted("reply-1"),
        TextDelta("Hello"),
        Citation(title="T", url="https://t.test"),
        TextDelta(" there"),
        Finish("stop"),
    ]


def one_byte_chunks(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


def split_inside(body: bytes, char: str) -> list[bytes]:
    """Two reads, the first ending after the first byte of ``char``'s UTF-8 encoding."""
    cut = body.index(char.encode()) + 1
    with pytest.raises(UnicodeDecodeError):
        body[:cut].decode()  # the split really falls inside the character
    return [body[:cut], body[cut:]]


@pytest.mark.parametrize("separator", ["\n\n", "\r\n\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize(
    "chunking",
    [lambda body: split_inside(body, "世"), one_byte_chunks],
    ids=["split-inside-a-character", "one-byte-reads"],
)
def test_multibyte_text_split_across_reads_decodes_whole(upstream, mocked, separator, chunking):
    body = sse(REQ, RESP, cmpl("你好，"), cmpl("世界！"), *DONE, separator=separator)
    events = run_turn(upstream, mocked, body=ChunkedBody(chunking(body)))
    assert text_of(events) == "你好，世界！"
    assert events[-1] == Finish("stop")


def test_length_continues_the_segment_and_appends_the_rest(upstream, mocked):
    add_chat(mocked)
    add_completion(mocked, sse(REQ, RESP, cmpl("Part one"), {"event": "length"}, *DONE))
    second = sse({**REQ, "id": "seg-2"}, {**RESP, "id": "reply-2"}, cmpl(", part two"), *DONE)
    add_completion(mocked, second)
    events = list(upstream.stream_turn(SESSION, target(model=AGENT)))
    _, continue_body = completion_bodies(mocked)
    assert continue_body == {
        "segment_id": "seg-1",
        "action": "continue",
        "messages": [{"role": "user", "content": " "}],
        "kimiplus_id": AGENT,
    }
    assert text_of(events) == "Part one, part two"
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop")]
    assert events[-1] == Finish("stop")


def test_an_answer_that_keeps_hitting_length_ends_as_length(upstream, mocked):
    add_chat(mocked)
    add_completion(mocked, sse(REQ, RESP, cmpl("more"), {"event": "length"}, *DONE))
    events = list(upstream.stream_turn(SESSION, target()))
    assert len(completion_bodies(mocked)) == 1 + MAX_CONTINUATIONS
    assert text_of(events) == "more" * (1 + MAX_CONTINUATIONS)
    assert [e for e in events if isinstance(e, Finish)] == [Finish("length")]
    assert events[-1] == Finish("length")


def test_moderation_error_keeps_the_text_and_finishes_as_content_filter(upstream, mocked):
    error = {"event": "error", "error": {"error_type": "chat.content_risk", "message": "no"}}
    body = sse(REQ, RESP, cmpl("Before"), {"event": "length"}, error)
    events = run_turn(upstream, mocked, body=body)
    assert text_of(events) == "Before"
    assert events[-1] == Finish("content_filter")
    assert len(completion_bodies(mocked)) == 1


def test_in_stream_rate_limit_raises_after_the_text_so_far(upstream, mocked):
    error = {"event": "error", "error": {"error_type": "chat.rate_limit", "message": "slow"}}
    add_chat(mocked)
    add_completion(mocked, sse(REQ, RESP, cmpl("Before"), error))
    seen = []
    with pytest.raises(RateLimited):
        for event in upstream.stream_turn(SESSION, target()):
            seen.append(event)
    assert TextDelta("Before") in seen


def test_stream_ending_without_done_is_upstream_cut(upstream, mocked):
    with pytest.raises(UpstreamError) as caught:
        run_turn(upstream, mocked, body=sse(REQ, RESP, cmpl("Hel")))
    assert caught.value.code == "upstream_cut"


def test_data_line_that_is_not_json_is_an_upstream_error(upstream, mocked):
    body = sse(REQ, RESP) + b"data: {not json\n\n" + sse(*DONE)
    with pytest.raises(UpstreamError):
        run_turn(upstream, mocked, body=body)


def error_answer(error_type: str) -> dict:
    return {"json": {"error_type": error_type, "message": "x"}}


@pytest.mark.parametrize(
    "status, answer, error_class",
    [
        (401, error_answer("auth.token.invalid"), UpstreamAuthRejected),
        (429, error_answer("chat.rate_limit"), RateLimited),
        (400, error_answer("chat.user_stream_pushing"), ConversationBusy),
        (404, error_answer("chat.not_found"), NotFound),
        (500, error_answer("internal"), UpstreamError),
        (200, {"body": "<html>captcha</html>", "content_type": "text/html"}, UpstreamError),
    ],
    ids=["401", "429", "stream-pushing", "not-found", "500", "html"],
)
def test_completion_failure_maps_to_the_service_error(
    upstream, mocked, status, answer, error_class
):
    mocked.add(responses.POST, COMPLETION_URL, status=status, **answer)
    with pytest.raises(error_class):
        list(upstream.stream_turn(SESSION, target(chat_id=CHAT_ID)))


@pytest.mark.parametrize(
    "failure, error_class, code",
    [
        (requests.Timeout("read timed out"), UpstreamTimeout, "upstream_timeout"),
        (requests.ConnectionError("refused"), UpstreamError, "upstream_unreachable"),
    ],
    ids=["timeout", "unreachable"],
)
def test_transport_failures_map_to_service_errors(upstream, mocked, failure, error_class, code):
    mocked.add(responses.POST, COMPLETION_URL, body=failure)
    with pytest.raises(error_class) as caught:
        list(upstream.stream_turn(SESSION, target(chat_id=CHAT_ID)))
    assert caught.value.code == code


def test_exhausted_research_quota_is_rate_limited_before_creating_a_chat(upstream, mocked):
    mocked.add(responses.GET, USAGE_URL, json={"remain": 0, "total": 3, "used": 3})
    with pytest.raises(RateLimited) as caught:
        list(upstream.stream_turn(SESSION, target(model="kimi-research")))
    assert caught.value.code == "research_quota_exhausted"
    assert [c.request.url for c in mocked.calls] == [USAGE_URL]


def test_research_with_quota_left_checks_it_then_opens_the_chat(upstream, mocked):
    events = run_turn(upstream, mocked, model="kimi-research")
    assert [c.request.url for c in mocked.calls] == [USAGE_URL, CHAT_URL, COMPLETION_URL]
    assert events[0] == ChatOpened(CHAT_ID)


# --- other calls --------------------------------------------------------------------------


def test_delete_chat_deletes_it_by_id(upstream, mocked):
    mocked.add(responses.DELETE, f"{CHAT_URL}/{CHAT_ID}", json={})
    upstream.delete_chat(SESSION, CHAT_ID)
    [call] = mocked.calls
    assert call.request.method == "DELETE"
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS}"


@pytest.mark.parametrize("answer, alive", [({"id": "user-legacy"}, True), ({}, False)])
def test_check_is_true_only_when_the_user_has_an_id(upstream, mocked, answer, alive):
    mocked.add(responses.GET, USER_URL, json=answer)
    assert upstream.check(SESSION) is alive


def test_check_with_a_dead_token_raises_auth_rejected(upstream, mocked):
    mocked.add(responses.GET, USER_URL, status=401, json={"error_type": "auth.token.invalid"})
    with pytest.raises(UpstreamAuthRejected):
        upstream.check(SESSION)


def test_there_is_no_live_catalog_only_the_static_models(upstream):
    assert upstream.list_models(SESSION) == []
    assert {"kimi-research", "kimi-k1", "kimi-math"} <= set(upstream.static_models())
