"""The OpenAI encoding of a turn's events: stream chunks, and the same events folded into one."""

from __future__ import annotations

import json

import pytest

from kimi.chat_request import parse_chat_request
from kimi.encoder import KEEPALIVE_LINE, CompletionEncoder, Reply
from kimi.errors import UpstreamCut, UpstreamError
from kimi.events import FINISH_LENGTH, Finish, ReasoningDelta, TextDelta
from kimi.keepalive import KEEPALIVE

ANSWER = [
    ReasoningDelta("Think"),
    ReasoningDelta("ing."),
    TextDelta("Hel"),
    TextDelta("lo"),
    Finish(),
]


def request(**body):
    body.setdefault("model", "kimi-thinking")
    body.setdefault("messages", [{"role": "user", "content": "Say hello"}])
    return parse_chat_request({"stream": True, **body})


def encode(events, **body) -> list[bytes]:
    """The stream's server-sent events, one ``bytes`` each."""
    return list(CompletionEncoder(request(**body)).stream(iter(events)))


def payloads(chunks: list[bytes]) -> list:
    """Each ``data:`` line decoded (JSON, or the string ``[DONE]``); comments skipped."""
    decoded = []
    for chunk in chunks:
        assert chunk.endswith(b"\n\n")
        if chunk.startswith(b"data: "):
            data = chunk[len(b"data: ") : -2].decode("utf-8")
            decoded.append(data if data == "[DONE]" else json.loads(data))
    return decoded


def deltas(events: list) -> list[dict]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


def broken(*events, error: Exception):
    yield from events
    raise error


def test_the_stream_opens_with_the_role_and_closes_with_finish_then_done():
    events = payloads(encode(ANSWER))
    assert deltas(events)[0] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["finish_reason"] for e in events[:-2]] == [None] * (len(events) - 2)


def test_deltas_carry_the_text_and_reasoning_in_order():
    assert deltas(payloads(encode(ANSWER)))[1:-1] == [
        {"reasoning_content": "Think"},
        {"reasoning_content": "ing."},
        {"content": "Hel"},
        {"content": "lo"},
    ]


def test_every_chunk_has_the_same_id_created_and_model():
    events = payloads(encode(ANSWER, stream_options={"include_usage": True}))[:-1]
    assert {(e["id"], e["created"], e["model"], e["object"]) for e in events} == {
        (events[0]["id"], events[0]["created"], "kimi-thinking", "chat.completion.chunk")
    }


def test_no_usage_chunk_without_include_usage():
    events = payloads(encode(ANSWER))[:-1]
    assert all("usage" not in e for e in events)
    assert all(e["choices"] for e in events)


def test_include_usage_adds_a_usage_chunk_before_done():
    events = payloads(encode(ANSWER, stream_options={"include_usage": True}))
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(e["usage"] is None for e in events[:-2])


def test_keepalive_becomes_a_comment_line_in_its_place():
    chunks = encode([TextDelta("a"), KEEPALIVE, KEEPALIVE, TextDelta("b"), Finish()])
    assert chunks[2:4] == [KEEPALIVE_LINE, KEEPALIVE_LINE]
    assert KEEPALIVE_LINE.startswith(b":")  # a comment: clients ignore it
    assert deltas(payloads(chunks))[1:3] == [{"content": "a"}, {"content": "b"}]


def test_an_error_after_the_start_is_one_error_event_and_no_done():
    events = payloads(encode(broken(TextDelta("Hal"), error=UpstreamError("connection reset"))))
    assert deltas(events) == [{"role": "assistant", "content": ""}, {"content": "Hal"}]
    assert events[-1] == {
        "error": {
            "message": "connection reset",
            "type": "upstream_error",
            "param": None,
            "code": "bad_gateway",
        }
    }
    assert "[DONE]" not in events


def test_a_stream_ending_without_finish_is_an_upstream_cut_error():
    events = payloads(encode([TextDelta("Hal")]))
    assert events[-1]["error"]["code"] == "upstream_cut"
    assert "[DONE]" not in events
    assert len([e for e in events if "error" in e]) == 1


def test_collect_folds_text_reasoning_and_finish_reason():
    reply = Reply.collect(iter(ANSWER[:-1] + [Finish(FINISH_LENGTH)]))
    completion = CompletionEncoder(request()).completion(reply)
    (choice,) = completion["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "Thinking.",
    }
    assert choice["finish_reason"] == "length"
    assert completion["object"] == "chat.completion"


def test_a_completion_without_reasoning_has_no_reasoning_content():
    reply = Reply.collect([TextDelta("Hello"), Finish()])
    message = CompletionEncoder(request()).completion(reply)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello"}


def test_the_folded_usage_equals_the_streamed_usage():
    streamed = payloads(encode(ANSWER, stream_options={"include_usage": True}))[-2]["usage"]
    folded = CompletionEncoder(request()).completion(Reply.collect(ANSWER))["usage"]
    assert folded == streamed


def test_collect_of_events_without_finish_is_an_upstream_cut():
    with pytest.raises(UpstreamCut):
        Reply.collect([TextDelta("Hal")])


def test_collect_lets_an_upstream_error_through():
    with pytest.raises(UpstreamError, match="connection reset"):
        Reply.collect(broken(TextDelta("Hal"), error=UpstreamError("connection reset")))
