"""The web protocol's state-sync frames become internal events."""

from __future__ import annotations

import pytest

from kimi.errors import RateLimited, UpstreamAuthRejected, UpstreamError
from kimi.events import (
    ChatOpened,
    Finish,
    ReasoningDelta,
    ReplyStarted,
    TextDelta,
)
from kimi.upstream.connect import END_STREAM_FLAG, Frame
from kimi.upstream.web_stream import WebStreamParser

CHAT = {"chat": {"id": "chat-1", "name": "Weather"}}
USER_DONE = {
    "op": "set",
    "mask": "message",
    "message": {"id": "u1", "parentId": "", "role": "user", "status": "MESSAGE_STATUS_COMPLETED"},
}
REPLY = {
    "op": "set",
    "mask": "message",
    "message": {
        "id": "r1",
        "parentId": "u1",
        "role": "assistant",
        "status": "MESSAGE_STATUS_GENERATING",
    },
}
DONE = {"eventOffset": 42, "done": {}}


def status(status_name: str, message_id: str = "r1") -> dict:
    return {
        "op": "set",
        "mask": "message.status",
        "message": {"id": message_id, "status": status_name},
    }


def block(op: str, kind: str, block_id: str, content: str, **extra) -> dict:
    mask = f"block.{kind}" if op == "set" else f"block.{kind}.content"
    return {"op": op, "mask": mask, "block": {"id": block_id, kind: {"content": content, **extra}}}


def run(messages: list[dict], *, end_flag: bool = False):
    parser = WebStreamParser()
    events = []
    for message in messages:
        events += parser.feed(Frame(0, message))
    if end_flag:
        events += parser.feed(Frame(END_STREAM_FLAG, {}))
    events += parser.close()
    return events, parser


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def reasoning_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def test_full_turn_yields_chat_reply_reasoning_text_and_one_finish():
    events, parser = run(
        [
            CHAT,
            REPLY,
            {"heartbeat": {}},
            block("set", "think", "b1", "first words"),
            block("append", "think", "b1", " more"),
            block("set", "text", "b2", "Answer"),
            block("append", "text", "b2", " more"),
            status("MESSAGE_STATUS_COMPLETED"),
            DONE,
        ],
        end_flag=True,
    )
    assert events == [
        ChatOpened("chat-1"),
        ReplyStarted("r1"),
        ReasoningDelta("first words"),
        ReasoningDelta(" more"),
        TextDelta("Answer"),
        TextDelta(" more"),
        Finish("stop"),
    ]
    assert parser.finished


def test_second_text_block_starts_a_new_paragraph():
    events, _ = run(
        [REPLY, block("set", "text", "b2", "One"), block("set", "text", "b4", "Two"), DONE]
    )
    assert text_of(events) == "One\n\nTwo"


def test_first_text_after_thinking_has_no_paragraph_break():
    events, _ = run(
        [REPLY, block("set", "think", "b1", "hmm"), block("set", "text", "b2", "Hi"), DONE]
    )
    assert text_of(events) == "Hi"
    assert reasoning_of(events) == "hmm"


@pytest.mark.parametrize("flags", ["thinking", ["thinking"], "THINKING"])
def test_text_block_flagged_thinking_is_reasoning(flags):
    events, _ = run(
        [
            REPLY,
            block("set", "text", "b1", "pondering", flags=flags),
            block("set", "text", "b2", "Answer", flags="answer"),
            DONE,
        ]
    )
    assert reasoning_of(events) == "pondering"
    assert text_of(events) == "Answer"


@pytest.mark.parametrize(
    "stage",
    [
        {"name": "STAGE_NAME_THINKING", "content": "deep thought"},
        {"name": "STAGE_NAME_THINKING", "think": {"content": "deep thought"}},
    ],
)
def test_multi_stage_thinking_stage_is_reasoning(stage):
    other = {"name": "STAGE_NAME_SEARCH", "content": "searching"}
    frame = {
        "op": "set",
        "mask": "block.multiStage",
        "block": {"id": "b1", "multiStage": {"stages": [other, stage]}},
    }
    events, _ = run([REPLY, frame, block("set", "text", "b2", "Answer"), DONE])
    assert reasoning_of(events) == "deep thought"
    assert text_of(events) == "Answer"


def test_citation_marker_split_across_two_appends_never_reaches_the_text():
    events, _ = run(
        [
            REPLY,
            block("set", "text", "b2", "Sunny"),
            block("append", "text", "b2", " today🛠web_sea"),
            block("append", "text", "b2", "rch:1#5🛠."),
            DONE,
        ]
    )
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) == "Sunny today."
    assert all("🛠" not in t and "web_search" not in t for t in texts)


@pytest.mark.parametrize("blocked", ["MESSAGE_STATUS_BLOCKED", "MESSAGE_STATUS_SENSITIVE"])
def test_blocked_status_finishes_with_content_filter(blocked):
    events, _ = run([REPLY, block("set", "text", "b2", "Well"), status(blocked), DONE])
    assert [e for e in events if isinstance(e, Finish)] == [Finish("content_filter")]


@pytest.mark.parametrize(
    "code, error_class",
    [
        ("unauthenticated", UpstreamAuthRejected),
        ("resource_exhausted", RateLimited),
        ("internal", UpstreamError),
    ],
)
@pytest.mark.parametrize("text_key", ["message", "msg"])
def test_error_frame_raises_the_mapped_error(code, error_class, text_key):
    parser = WebStreamParser()
    list(parser.feed(Frame(0, REPLY)))
    with pytest.raises(error_class) as caught:
        list(parser.feed(Frame(0, {"error": {"code": code, text_key: "model crashed"}})))
    assert "model crashed" in caught.value.message


def test_end_stream_frame_carrying_an_error_raises():
    parser = WebStreamParser()
    list(parser.feed(Frame(0, REPLY)))
    end = Frame(END_STREAM_FLAG, {"error": {"code": "unauthenticated", "message": "expired"}})
    with pytest.raises(UpstreamAuthRejected):
        list(parser.feed(end))


def test_rate_limit_error_frame_carries_the_parser_retry_after():
    parser = WebStreamParser(retry_after=120)
    with pytest.raises(RateLimited) as caught:
        list(parser.feed(Frame(0, {"error": {"code": "resource_exhausted", "message": "slow"}})))
    assert caught.value.retry_after == 120


def test_stream_without_completion_is_not_finished():
    events, parser = run([CHAT, REPLY, block("set", "text", "b2", "Half an ans")])
    assert not parser.finished
    assert not any(isinstance(e, Finish) for e in events)


def test_close_after_completed_status_finishes_the_turn():
    events, parser = run(
        [REPLY, block("set", "text", "b2", "All"), status("MESSAGE_STATUS_COMPLETED")]
    )
    assert events[-1] == Finish("stop")
    assert parser.finished


@pytest.mark.parametrize(
    "ending", [{"done": DONE, "flag": False}, {"done": None, "flag": True}], ids=["done", "flag"]
)
def test_done_frame_or_end_stream_flag_finishes_the_turn_at_close(ending):
    messages = [REPLY, block("set", "text", "b2", "All")]
    if ending["done"]:
        messages.append(ending["done"])
    events, parser = run(messages, end_flag=ending["flag"])
    assert events[-1] == Finish("stop")
    assert parser.finished


def test_finish_is_emitted_once_even_with_status_done_flag_and_close():
    events, _ = run([REPLY, status("MESSAGE_STATUS_COMPLETED"), DONE], end_flag=True)
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop")]


def test_unclosed_marker_text_is_flushed_before_finish():
    events, _ = run([REPLY, block("set", "text", "b2", "Price 🛠 is high"), DONE])
    assert text_of(events) == "Price  is high"


@pytest.mark.parametrize(
    "noise",
    [
        {"heartbeat": {}},
        {"notice": {"type": "TYPE_MODEL_DEGRADE"}},
        {"somethingNew": {"x": 1}},
        {"op": "set", "mask": "block.tool", "block": {"id": "b3", "tool": {"name": "web_search"}}},
        {"op": "set", "mask": "unknown.mask", "unknown": {}},
        [],
        "a string",
    ],
)
def test_heartbeat_and_unknown_frames_are_ignored(noise):
    events, parser = run([noise, REPLY, noise, block("set", "text", "b2", "Hi"), noise, DONE])
    assert events == [ReplyStarted("r1"), TextDelta("Hi"), Finish("stop")]


def test_user_message_status_after_the_reply_started_does_not_finish_the_turn():
    events, parser = run(
        [REPLY, status("MESSAGE_STATUS_COMPLETED", "u1"), block("set", "text", "b2", "Hi")]
    )
    assert not parser.finished
    assert not any(isinstance(e, Finish) for e in events)


def test_user_message_completed_before_the_reply_does_not_finish_the_turn():
    events, parser = run([CHAT, USER_DONE, REPLY, block("set", "text", "b2", "Half an ans")])
    assert not parser.finished
    assert not any(isinstance(e, Finish) for e in events)


def test_second_assistant_message_does_not_restart_the_reply():
    other = {"op": "set", "mask": "message", "message": {"id": "r2", "role": "assistant"}}
    events, _ = run([REPLY, other, DONE])
    assert [e for e in events if isinstance(e, ReplyStarted)] == [ReplyStarted("r1")]
