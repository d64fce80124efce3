"""The legacy protocol's SSE events become internal events."""

from __future__ import annotations

import pytest

from kimi.errors import ConversationBusy, RateLimited, UpstreamAuthRejected
from kimi.events import Citation, Finish, ReplyStarted, TextDelta
from kimi.upstream.legacy_stream import LegacyStreamParser

REQ = {"event": "req", "id": "seg-1", "group_id": "g1", "content": "hi", "refs": []}
RESP = {"event": "resp", "id": "reply-1", "group_id": "g1"}
DONE = {"event": "done"}
ALL_DONE = {"event": "all_done"}
LENGTH = {"event": "length"}
MODERATION = {"event": "error", "error": {"error_type": "chat.content_risk", "message": "no"}}


def cmpl(text: str) -> dict:
    return {"event": "cmpl", "text": text}


def search(kind: str, **msg) -> dict:
    return {"event": "search_plus", "msg": {"type": kind, **msg}}


def run(parser: LegacyStreamParser, *events) -> list:
    seen = []
    for data in events:
        seen += parser.feed(data)
    return seen


def test_req_sets_the_segment_id_and_yields_nothing():
    parser = LegacyStreamParser()
    assert run(parser, REQ) == []
    assert parser.segment_id == "seg-1"


def test_only_the_first_req_names_the_segment():
    parser = LegacyStreamParser()
    run(parser, REQ, {**REQ, "id": "seg-2"})
    assert parser.segment_id == "seg-1"


def test_resp_yields_reply_started_once():
    parser = LegacyStreamParser()
    assert run(parser, RESP, {**RESP, "id": "reply-2"}) == [ReplyStarted("reply-1")]


def test_cmpl_yields_its_text_in_order():
    parser = LegacyStreamParser()
    assert run(parser, cmpl("Hello"), cmpl(", 世界")) == [TextDelta("Hello"), TextDelta(", 世界")]


def test_search_result_becomes_a_citation():
    parser = LegacyStreamParser()
    result = search("get_res", title="Weather", url="https://weather.test/today")
    assert run(parser, result) == [Citation(title="Weather", url="https://weather.test/today")]


@pytest.mark.parametrize(
    "data",
    [
        search("start"),
        search("answer", successNum=3),
        search("get_res", title="no url"),
        {"event": "ping"},
        {"event": "debug", "info": "x"},
        {"event": "rename", "text": "New title"},
        {"event": "something_new", "text": "surprise"},
        cmpl(""),
        ["not", "an", "object"],
        "text",
    ],
    ids=[
        "search-start",
        "search-answer",
        "search-result-without-url",
        "ping",
        "debug",
        "rename",
        "unknown-event",
        "empty-text",
        "list",
        "string",
    ],
)
def test_events_without_meaning_for_the_answer_yield_nothing(data):
    parser = LegacyStreamParser()
    assert run(parser, data) == []
    assert parser.finish() == Finish("stop")


def test_a_plain_answer_finishes_with_stop():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Hi"), DONE, ALL_DONE)
    assert not parser.needs_continuation
    assert parser.finish() == Finish("stop")


def test_length_asks_for_a_continuation_and_would_finish_as_length():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Part one"), LENGTH, DONE)
    assert parser.hit_length
    assert parser.needs_continuation
    assert parser.finish() == Finish("length")


def test_length_without_a_segment_id_cannot_be_continued():
    parser = LegacyStreamParser()
    run(parser, RESP, cmpl("Part one"), LENGTH, DONE)
    assert not parser.needs_continuation
    assert parser.finish() == Finish("length")


def test_a_continuation_that_completes_finishes_with_stop():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Part one"), LENGTH, DONE)
    parser.start_continuation()
    events = run(parser, {**REQ, "id": "seg-2"}, cmpl(" and two"), DONE)
    assert events == [TextDelta(" and two")]
    assert not parser.needs_continuation
    assert parser.finish() == Finish("stop")
    assert parser.segment_id == "seg-1"


@pytest.mark.parametrize(
    "error",
    [
        {"error_type": "chat.content_risk", "message": "blocked"},
        {"error_type": "validation.error", "message": "bad"},
        {"code": "moderation", "msg": "blocked"},
        None,
    ],
    ids=["content-risk", "validation", "code-and-msg", "no-details"],
)
def test_a_stopping_error_finishes_as_content_filter(error):
    parser = LegacyStreamParser()
    events = run(parser, REQ, RESP, cmpl("Before"), {"event": "error", "error": error})
    assert events == [ReplyStarted("reply-1"), TextDelta("Before")]
    assert parser.call_complete
    assert parser.finish() == Finish("content_filter")


def test_a_stopping_error_after_length_is_not_continued():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Before"), LENGTH, MODERATION)
    assert not parser.needs_continuation
    assert parser.finish() == Finish("content_filter")


@pytest.mark.parametrize(
    "error_type, error_class",
    [
        ("auth.token.invalid", UpstreamAuthRejected),
        ("chat.rate_limit", RateLimited),
        ("chat.user_stream_pushing", ConversationBusy),
    ],
)
def test_retryable_in_stream_errors_raise(error_type, error_class):
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Before"))
    with pytest.raises(error_class):
        run(parser, {"event": "error", "error": {"error_type": error_type, "message": "x"}})


def test_in_stream_rate_limit_carries_the_configured_retry_after():
    parser = LegacyStreamParser(retry_after=30)
    with pytest.raises(RateLimited) as caught:
        run(parser, {"event": "error", "error": {"error_type": "chat.rate_limit"}})
    assert caught.value.retry_after == 30


def test_call_is_not_complete_before_done():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Hi"), LENGTH)
    assert not parser.call_complete


@pytest.mark.parametrize("end", [DONE, ALL_DONE], ids=["done", "all_done"])
def test_call_is_complete_after_the_end_event(end):
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Hi"), end)
    assert parser.call_complete


def test_a_continuation_call_is_not_complete_until_its_own_done():
    parser = LegacyStreamParser()
    run(parser, REQ, RESP, cmpl("Part one"), LENGTH, DONE)
    parser.start_continuation()
    run(parser, cmpl(" and two"))
    assert not parser.call_complete
    run(parser, ALL_DONE)
    assert parser.call_complete
