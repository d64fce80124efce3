"""Arbitrary bodies, headers and content parts at the public routes: never a 5xx, never a
traceback, and an invalid request never reaches Kimi.

Each example resets the emulator (its own call record, a fresh user), so the upstream calls
seen belong to that one request. Bounded: a few hundred examples, a small body limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kimi import create_app
from kimi.settings import PROTOCOLS

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Refusals that must come before any upstream call: the body, its size, or a kept chat unknown.
REFUSED_BEFORE_KIMI = (400, 404, 413)
LONE_SURROGATES = ["\ud800", "a\udfffb", "\udbff\udbff", "x\ud83d"]
TEXT = st.one_of(
    st.text(max_size=30),
    st.text(max_size=30),
    st.sampled_from([*LONE_SURROGATES, "\ud83d\ude00", ""]),
)
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([10**4000, -(10**300), 2**63, 0, 1, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=20,
)
# Only addresses the fetcher refuses without a network: loopback and private hosts, odd schemes,
# and data: URLs it decodes locally.
URLS = st.sampled_from(
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:,hello",
        "data:image/png;base64,!!!",
        "data:application/pdf;base64,JVBERi0=",
        "data:",
        "http://127.0.0.1:1/x.txt",
        "https://localhost/a.png",
        "http://10.0.0.1/doc.pdf",
        "http://[::1]/a",
        "ftp://example.invalid/x",
        "file:///etc/passwd",
        "",
        "\ud800",
    ]
)
CONTENT_PARTS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(TEXT, JSON_VALUES)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.one_of(st.fixed_dictionaries({"url": URLS}), URLS, JSON_VALUES),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("file"), "file_url": st.one_of(st.fixed_dictionaries({"url": URLS}))}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("file"),
            "file": st.fixed_dictionaries(
                {"file_data": st.one_of(URLS, JSON_VALUES), "filename": st.one_of(TEXT, NUMBERS)}
            ),
        }
    ),
    st.fixed_dictionaries({"type": st.one_of(TEXT, JSON_VALUES)}),
    JSON_VALUES,
)
ROLES = st.one_of(
    st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]), JSON_VALUES
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": ROLES},
        optional={
            "content": st.one_of(TEXT, st.lists(CONTENT_PARTS, max_size=3), JSON_VALUES),
            "tool_calls": JSON_VALUES,
            "tool_call_id": JSON_VALUES,
            "name": JSON_VALUES,
        },
    ),
    max_size=3,
)
ANY_FIELD = (
    "model",
    "stream",
    "conversation_id",
    "tools",
    "tool_choice",
    "response_format",
    "temperature",
    "max_tokens",
    "stop",
    "n",
    "stream_options",
    "use_search",
    "reasoning_effort",
    "logprobs",
)
ANY_CHAT = st.fixed_dictionaries(
    {"messages": st.one_of(MESSAGES, JSON_VALUES)},
    optional={name: JSON_VALUES for name in ANY_FIELD},
)


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` seven times in eight, else any JSON value: most bodies then carry at most one
    bad value, and many get through to Kimi."""
    return st.sampled_from(range(8)).flatmap(lambda roll: valid if roll < 7 else JSON_VALUES)


# Bodies a client could mean: they pass validation often enough to reach the emulator, with a
# hostile value here and there.
PLAIN_TEXT = st.text(min_size=1, max_size=20).filter(str.strip)
LAST_USER_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": st.one_of(PLAIN_TEXT, st.lists(CONTENT_PARTS, min_size=1, max_size=2), TEXT),
    }
)
EARLIER_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": mostly(PLAIN_TEXT)}
    ),
    max_size=2,
)
A_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}
LIKELY_CHAT = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["kimi", "kimi-search", "kimi-thinking", "kimi-think-tags", "x"]),
        "messages": st.builds(
            lambda earlier, last: [*earlier, last], EARLIER_MESSAGES, LAST_USER_MESSAGE
        ),
    },
    optional={
        "stream": mostly(st.booleans()),
        "conversation_id": mostly(st.sampled_from(["none", "", "no-such-chat", "\ud800"])),
        "temperature": mostly(st.floats(min_value=0, max_value=2)),
        "max_tokens": mostly(st.integers(min_value=1, max_value=40)),
        "stop": mostly(st.one_of(PLAIN_TEXT, st.lists(PLAIN_TEXT, max_size=3))),
        "tools": mostly(st.just([A_TOOL])),
        "tool_choice": mostly(st.sampled_from(["auto", "none"])),
        "response_format": mostly(st.just({"type": "text"})),
        "stream_options": mostly(st.just({"include_usage": True})),
        "n": mostly(st.just(1)),
        "reasoning_effort": mostly(st.sampled_from(["low", "high"])),
    },
)
CHAT_BODIES = st.sampled_from(range(4)).flatmap(
    lambda roll: (LIKELY_CHAT, LIKELY_CHAT, ANY_CHAT, JSON_VALUES)[roll]
)
# Header values a client can send: latin-1 text without line breaks.
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
AUTHORIZATIONS = st.one_of(
    st.sampled_from(["valid", "valid-list", "dead", "many", "none", "empty-bearer"]), HEADER_TEXT
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
    HEADER_TEXT,
)


@pytest.fixture
def property_app(make_settings):
    return create_app(make_settings(max_request_mb=0.25, token_checks_per_minute=100_000))


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON text as a hostile client may send it: NaN/Infinity literals and raw surrogates
    (as their UTF-8 bytes) included."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def authorization(kind: str, token: str) -> dict[str, str]:
    headers = {
        "valid": f"Bearer {token}",
        "valid-list": f"Bearer dead-1,{token}",
        "dead": "Bearer dead-token",
        "many": "Bearer " + ",".join(f"t{i}" for i in range(50)),
        "empty-bearer": "Bearer ",
    }
    if kind == "none":
        return {}
    return {"Authorization": headers.get(kind, kind)}


def fresh_account(emulator) -> str:
    emulator.state.reset()
    return emulator.state.create_user("prop").refresh_token


def assert_sound(response, emulator, *, has_body: bool = True) -> None:
    text = response.get_data(as_text=True)
    event(f"status {response.status_code}")
    assert response.status_code < 500, text
    assert "Traceback" not in text
    if has_body and response.status_code in REFUSED_BEFORE_KIMI:
        assert emulator.state.calls() == [], text
    if response.status_code >= 400:
        assert set(response.get_json()["error"]) >= {"message", "type", "param", "code"}


def post_chat(app, raw: bytes, headers: dict[str, str]):
    with app.test_client() as client:
        response = client.post("/v1/chat/completions", data=raw, headers=headers)
        response.get_data()  # a stream runs to its end here
        return response


@pytest.mark.parametrize("protocol", PROTOCOLS)
@PROPERTY_SETTINGS
@given(body=CHAT_BODIES, ascii_only=st.booleans())
def test_chat_completions_survives_any_body(property_app, emulator, body, ascii_only):
    token = fresh_account(emulator)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert_sound(post_chat(property_app, encode(body, ascii_only), headers), emulator)


@PROPERTY_SETTINGS
@given(body=CHAT_BODIES, auth=AUTHORIZATIONS, content_type=CONTENT_TYPES)
def test_chat_completions_survives_any_headers(property_app, emulator, body, auth, content_type):
    token = fresh_account(emulator)
    headers = {**authorization(auth, token), "Content-Type": content_type}
    assert_sound(post_chat(property_app, encode(body, True), headers), emulator)


@PROPERTY_SETTINGS
@given(depth=st.integers(min_value=1, max_value=3000), closed=st.booleans(), auth=AUTHORIZATIONS)
def test_chat_completions_survives_any_nesting(property_app, emulator, depth, closed, auth):
    token = fresh_account(emulator)
    raw = b'{"messages": ' + b"[" * depth + (b"]" * depth if closed else b"") + b"}"
    response = property_app.test_client().post(
        "/v1/chat/completions",
        data=raw,
        headers={**authorization(auth, token), "Content-Type": "application/json"},
    )
    assert_sound(response, emulator)


# "access" and "refresh" stand for the example's own account's tokens.
TOKENS_TO_CHECK = st.one_of(st.sampled_from(["access", "refresh"]), TEXT, JSON_VALUES)


@PROPERTY_SETTINGS
@given(
    body=st.one_of(st.fixed_dictionaries({"token": TOKENS_TO_CHECK}), JSON_VALUES),
    ascii_only=st.booleans(),
    content_type=CONTENT_TYPES,
)
def test_token_check_survives_any_body(property_app, emulator, body, ascii_only, content_type):
    emulator.state.reset()
    issued = emulator.state.create_user("prop")
    if isinstance(body, dict) and body.get("token") in ("access", "refresh"):
        body = {"token": getattr(issued, f"{body['token']}_token")}
    response = property_app.test_client().post(
        "/token/check", data=encode(body, ascii_only), headers={"Content-Type": content_type}
    )
    assert_sound(response, emulator)


@PROPERTY_SETTINGS
@given(auth=AUTHORIZATIONS, model_id=st.one_of(st.none(), HEADER_TEXT))
def test_models_survive_any_credentials_and_id(property_app, emulator, auth, model_id):
    token = fresh_account(emulator)
    path = "/v1/models" if model_id is None else "/v1/models/" + model_id.replace("?", "%3F")
    response = property_app.test_client().get(path, headers=authorization(auth, token))
    # An unknown model is a 404 after the live catalog was read: no body, nothing to refuse.
    assert_sound(response, emulator, has_body=False)
