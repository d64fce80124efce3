"""Reading Kimi's error out of a recorded answer, in every shape either protocol sends it, and
the hint each kind of failure gets."""

from __future__ import annotations

import json

import pytest
import requests

from kimi.doctor.diagnosis import ProtocolChanged, hint, kimi_error
from kimi.doctor.wire import Exchange
from kimi.errors import (
    RateLimited,
    ResearchQuotaExhausted,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamTimeout,
)
from kimi.settings import Settings
from kimi.upstream.connect import encode_frame


def answer(status: int, content_type: str, body: bytes) -> Exchange:
    exchange = Exchange("step", "POST", "http://kimi.test/x", {}, b"", status=status)
    exchange.response_headers = {"Content-Type": content_type}
    exchange.body += body
    return exchange


def as_json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def sse(*events) -> bytes:
    return b"".join(b"data: " + as_json(event) + b"\n\n" for event in events)


LOCALIZED = {
    "code": "resource_exhausted",
    "message": "rate limit exceeded",
    "details": [{"debug": {"localizedMessage": {"message": "请求过于频繁"}}}],
}


@pytest.mark.parametrize(
    "exchange, code, message",
    [
        (
            answer(401, "application/json", as_json({"code": "unauthenticated", "message": "x"})),
            "unauthenticated",
            "x",
        ),
        (
            answer(429, "application/json", as_json({"error_type": "chat.rate_limit", "msg": "y"})),
            "chat.rate_limit",
            "y",
        ),
        (
            answer(
                200,
                "application/connect+json",
                encode_frame({"heartbeat": {}}) + encode_frame({"error": LOCALIZED}, flags=2),
            ),
            "resource_exhausted",
            "rate limit exceeded / 请求过于频繁",
        ),
        (
            answer(
                200,
                "application/connect+json",
                encode_frame(
                    {
                        "op": "set",
                        "mask": "block.exception",
                        "block": {"exception": {"error": {"reason": "REASON_X"}}},
                    }
                ),
            ),
            "REASON_X",
            None,
        ),
        (
            answer(
                200,
                "text/event-stream",
                sse({"event": "cmpl", "text": "hi"}, {"event": "error", "error": {"message": "z"}}),
            ),
            None,
            "z",
        ),
        (answer(200, "application/json", as_json({"code": "not an error"})), None, None),
        (answer(502, "text/html", b"<html>bad gateway</html>"), None, None),
    ],
    ids=["web-json", "legacy-json", "error-frame", "exception-block", "sse-error", "ok", "html"],
)
def test_kimis_error_is_read_from_the_recorded_answer(exchange, code, message):
    assert kimi_error(exchange) == (code, message)


SETTINGS = Settings(connect_timeout=3, read_timeout=7, file_parse_timeout=11)


def unreachable(cause: Exception) -> UpstreamError:
    error = UpstreamError("Kimi could not be reached.", code="upstream_unreachable")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "step, error, status, code, words",
    [
        ("refresh", UpstreamAuthRejected("no"), 401, "unauthenticated", "rotated elsewhere"),
        ("chat", UpstreamAuthRejected("no"), 401, "unauthenticated", "refused the access token"),
        ("chat", RateLimited("slow down", retry_after=30), 429, None, "wait 30 s"),
        ("models", ResearchQuotaExhausted("out"), None, None, "research"),
        ("stream", UpstreamTimeout("late"), None, None, "(3/7 s)"),
        ("upload", UpstreamTimeout("late", code="file_parse_timeout"), None, None, "(11 s)"),
        ("reach", unreachable(requests.ConnectionError()), None, None, "host unreachable"),
        ("reach", unreachable(requests.exceptions.SSLError()), None, None, "TLS failed"),
        ("chat", UpstreamError("html"), 200, None, "protocol changed"),
        ("chat", UpstreamError("refused"), 400, "invalid_argument", "request's shape"),
        ("chat", UpstreamError("down"), 503, None, "Kimi's side failed"),
        ("models", ProtocolChanged("empty"), 200, None, "protocol changed"),
        ("stream", KeyError("text"), 200, None, "protocol changed"),
    ],
)
def test_each_kind_of_failure_gets_its_hint(step, error, status, code, words):
    assert words in hint(step, error, status, code, SETTINGS)
