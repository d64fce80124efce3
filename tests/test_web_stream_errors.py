"""Error frames of the web chat stream become the right service error, wherever they fall."""

from __future__ import annotations

import pytest

from kimi.errors import (
    BadRequest,
    ConversationBusy,
    KimiError,
    NotFound,
    RateLimited,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from kimi.events import Finish, TextDelta
from kimi.upstream.connect import END_STREAM_FLAG, Frame, FrameDecoder, encode_frame
from kimi.upstream.web_errors import describe_stream_error, localized_message, stream_error
from kimi.upstream.web_stream import WebStreamParser

REPLY = {
    "op": "set",
    "mask": "message",
    "message": {"id": "r1", "role": "assistant", "status": "MESSAGE_STATUS_GENERATING"},
}
TEXT = {"op": "set", "mask": "block.text", "block": {"id": "b2", "text": {"content": "Half"}}}
DONE = {"eventOffset": 3, "done": {}}
LOCALIZED = "请求过于频繁，请稍后再试"


def error(code: str, message: str = "rpc failed", localized: str | None = LOCALIZED) -> dict:
    body = {"code": code, "message": message}
    if localized is not None:
        debug = {"reason": code.upper(), "localizedMessage": {"message": localized}}
        body["details"] = [{"debug": debug}]
    return body


# code -> (error class, status) for a one-shot turn
MAPPING = [
    ("unauthenticated", UpstreamAuthRejected, 401),
    ("resource_exhausted", RateLimited, 429),
    ("invalid_argument", BadRequest, 400),
    ("unavailable", UpstreamUnavailable, 503),
    ("deadline_exceeded", UpstreamTimeout, 504),
    ("unimplemented", UpstreamError, 502),
    ("internal", UpstreamError, 502),
    ("something_new", UpstreamError, 502),
    ("not_found", UpstreamError, 502),
    ("permission_denied", UpstreamError, 502),
]


def stream_bytes(messages: list[dict], end: dict) -> bytes:
    return b"".join(encode_frame(m) for m in messages) + encode_frame(end, END_STREAM_FLAG)


def parse_split(data: bytes, offset: int, **parser_args) -> tuple[list, KimiError | None]:
    """Feed ``data`` cut at ``offset`` through the frame decoder and the parser, as web.py does."""
    decoder, parser = FrameDecoder(), WebStreamParser(**parser_args)
    events: list = []
    try:
        for piece in (data[:offset], data[offset:]):
            for frame in decoder.feed(piece):
                events += parser.feed(frame)
        events += parser.close()
    except KimiError as exc:  # the error the stream ends with, checked by the caller
        return events, exc
    return events, None


@pytest.mark.parametrize("code, error_class, status", MAPPING)
def test_every_code_maps_to_its_error_with_the_localized_message(code, error_class, status):
    mapped = stream_error(error(code))
    assert type(mapped) is error_class
    assert mapped.status == status
    assert LOCALIZED in mapped.message
    assert "rpc failed" not in mapped.message


@pytest.mark.parametrize("code", ["not_found", "permission_denied"])
def test_a_kept_chat_kimi_does_not_know_is_404(code):
    mapped = stream_error(error(code), kept_chat=True)
    assert isinstance(mapped, NotFound)
    assert mapped.param == "conversation_id"


@pytest.mark.parametrize(
    "message, localized",
    [
        ("another answer is in progress in this chat", None),
        ("rpc failed", "当前会话正在生成回答，请稍后再试"),
        ("Generating a reply already", None),
    ],
)
def test_resource_exhausted_about_a_running_answer_is_409(message, localized):
    mapped = stream_error(error("resource_exhausted", message, localized))
    assert isinstance(mapped, ConversationBusy)
    assert mapped.status == 409


def test_resource_exhausted_carries_the_retry_after_given():
    mapped = stream_error(error("resource_exhausted"), retry_after=90)
    assert mapped.headers() == {"Retry-After": "90"}


@pytest.mark.parametrize(
    "body, expected",
    [
        (error("internal", "plain", None), "plain"),
        ({"code": "internal", "msg": "short form"}, "short form"),
        (error("internal", "plain", "本地化"), "本地化"),
        ({"code": "internal", "message": "plain", "details": "not a list"}, "plain"),
        ({"code": "internal", "message": "plain", "details": [{"debug": {"code": 1}}]}, "plain"),
        ("a bare string", "a bare string"),
    ],
)
def test_the_localized_message_is_preferred_when_there_is_one(body, expected):
    assert localized_message(body) == expected


def test_describe_gives_status_kimi_code_and_message():
    status, code, message = describe_stream_error(error("RESOURCE_EXHAUSTED"))
    assert (status, code, message) == (429, "resource_exhausted", LOCALIZED)
    assert describe_stream_error(error("not_found"), kept_chat=True).status == 404


@pytest.mark.parametrize("code, error_class, status", MAPPING)
def test_an_error_after_an_empty_done_still_wins_at_every_split(code, error_class, status):
    data = stream_bytes([REPLY, DONE], {"error": error(code)})
    for offset in range(len(data) + 1):
        events, raised = parse_split(data, offset)
        assert type(raised) is error_class, offset
        assert not any(isinstance(e, Finish) for e in events), offset


def test_an_error_after_some_text_raises_after_that_text_at_every_split():
    data = stream_bytes([REPLY, TEXT], {"error": error("unavailable")})
    for offset in range(len(data) + 1):
        events, raised = parse_split(data, offset)
        assert isinstance(raised, UpstreamUnavailable), offset
        assert events[-1] == TextDelta("Half")


def test_an_error_frame_on_a_continued_chat_is_404_through_the_parser():
    data = stream_bytes([REPLY, DONE], {"error": error("not_found")})
    _, raised = parse_split(data, len(data), kept_chat=True)
    assert isinstance(raised, NotFound)


def test_an_empty_end_of_stream_frame_after_done_finishes_normally():
    data = stream_bytes([REPLY, TEXT, DONE], {})
    events, raised = parse_split(data, 7)
    assert raised is None
    assert events[-1] == Finish("stop")


def exception(reason: str, severity: str = "SEVERITY_ERROR", message: str = "出错了") -> dict:
    error = {"reason": reason, "severity": severity, "localizedMessage": {"message": message}}
    return {
        "op": "set",
        "mask": "block.exception",
        "block": {"id": "b9", "exception": {"error": error}},
    }


COMPLETED = {
    "op": "set",
    "mask": "message.status",
    "message": {"id": "r1", "status": "MESSAGE_STATUS_COMPLETED"},
}
LATE_TEXT = {
    "op": "append",
    "mask": "block.text.content",
    "block": {"id": "b2", "text": {"content": " more"}},
}


@pytest.mark.parametrize("before", [[REPLY], [REPLY, TEXT]], ids=["before-text", "after-text"])
def test_an_overload_exception_raises_overloaded_whatever_follows_at_every_split(before):
    data = stream_bytes([*before, exception("REASON_COMPLETION_OVERLOADED"), COMPLETED, DONE], {})
    for offset in range(len(data) + 1):
        events, raised = parse_split(data, offset)
        assert isinstance(raised, UpstreamOverloaded), offset
        assert raised.status == 503
        assert "出错了" in raised.message
        assert not any(isinstance(e, Finish) for e in events)


@pytest.mark.parametrize(
    "reason",
    [
        "REASON_CONTENT_SENSITIVE",
        "REASON_BLOCKED",
        "REASON_RISK_CONTROL",
        "REASON_MODERATION",
        "REASON_MODEL_REFUSED",
        "REASON_CONTENT_FILTER",
    ],
)
def test_a_moderation_exception_finishes_as_content_filter_keeping_the_text(reason):
    data = stream_bytes([REPLY, TEXT, exception(reason), LATE_TEXT, COMPLETED, DONE], {})
    for offset in range(len(data) + 1):
        events, raised = parse_split(data, offset)
        assert raised is None, offset
        assert events[-2:] == [TextDelta("Half"), Finish("content_filter")], offset


def test_a_retracting_moderation_exception_is_noted_on_the_parser():
    parser = WebStreamParser()
    list(parser.feed(Frame(0, REPLY)))
    list(parser.feed(Frame(0, exception("REASON_SENSITIVE", "SEVERITY_BLOCK_RETRACT"))))
    assert list(parser.close()) == [Finish("content_filter")]
    assert parser.retracted


def test_a_moderation_exception_finishes_even_when_the_stream_then_stops():
    no_end = b"".join(encode_frame(m) for m in [REPLY, TEXT, exception("REASON_SENSITIVE")])
    events, raised = parse_split(no_end, 0)
    assert raised is None
    assert events[-1] == Finish("content_filter")


@pytest.mark.parametrize("shape", ["nested", "flat", "empty"])
def test_an_unknown_exception_is_an_error_with_kimis_message(shape):
    error = {"reason": "REASON_NEW", "localizedMessage": {"message": "换个问题试试"}}
    body = {"nested": {"error": error}, "flat": error, "empty": {}}[shape]
    parser = WebStreamParser()
    list(parser.feed(Frame(0, REPLY)))
    list(
        parser.feed(
            Frame(0, {"op": "set", "mask": "block.exception", "block": {"exception": body}})
        )
    )
    with pytest.raises(UpstreamError) as caught:
        list(parser.close())
    assert type(caught.value) is UpstreamError
    if shape != "empty":
        assert "换个问题试试" in caught.value.message


def test_an_error_frame_after_an_exception_wins():
    data = stream_bytes([REPLY, exception("REASON_SENSITIVE")], {"error": error("unavailable")})
    _, raised = parse_split(data, 0)
    assert isinstance(raised, UpstreamUnavailable)
