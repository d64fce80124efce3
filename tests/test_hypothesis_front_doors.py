"""Arbitrary bodies, headers, input items and content blocks at the newer front doors,
``POST /v1/responses`` and ``POST /v1/messages`` (with ``/count_tokens``): never a 5xx, never
a traceback, each surface's own error shape, and a refused body never reaches Kimi.

The value strategies are those of ``test_hypothesis_routes``; each example resets the emulator,
so the upstream calls seen belong to that one request.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_hypothesis_routes import (
    A_TOOL,
    AUTHORIZATIONS,
    CONTENT_TYPES,
    JSON_VALUES,
    NUMBERS,
    PLAIN_TEXT,
    PROPERTY_SETTINGS,
    REFUSED_BEFORE_KIMI,
    TEXT,
    URLS,
    authorization,
    encode,
    fresh_account,
    mostly,
)

from kimi import create_app
from kimi.anthropic_request import parse_messages_request
from kimi.errors import BadRequest
from kimi.responses_request import parse_responses_request

FRONT_DOOR_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=150)
# A value of the wrong JSON type, containers included: a list or an object where a string is
# expected must be refused as firmly as a number is.
WRONG_TYPES = st.one_of(
    st.lists(JSON_VALUES, min_size=1, max_size=2),
    st.dictionaries(TEXT, JSON_VALUES, max_size=2),
    NUMBERS,
    st.booleans(),
    st.none(),
    TEXT,
)


def hostile(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four, else a value of any JSON type: one field is wrong at a
    time often enough to reach every check."""
    return st.sampled_from(range(4)).flatmap(lambda roll: valid if roll < 3 else WRONG_TYPES)


RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


# --- Responses: input items ----------------------------------------------------------------

INPUT_PARTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text"]), "text": mostly(TEXT)}
    ),
    st.fixed_dictionaries({"type": st.just("refusal"), "refusal": mostly(TEXT)}),
    st.fixed_dictionaries(
        {"type": st.just("input_image")},
        optional={"image_url": mostly(URLS), "file_id": JSON_VALUES, "detail": JSON_VALUES},
    ),
    st.fixed_dictionaries(
        {"type": st.just("input_file")},
        optional={
            "file_url": mostly(URLS),
            "file_data": mostly(st.sampled_from(["aGVsbG8=", "data:,hi", "", "!!"])),
            "file_id": JSON_VALUES,
            "filename": mostly(TEXT),
        },
    ),
    st.fixed_dictionaries({"type": WRONG_TYPES}),
    JSON_VALUES,
)
CALL_IDS = mostly(st.sampled_from(["call_1", "call_2", "", "\ud800"]))
INPUT_ITEMS = st.one_of(
    st.fixed_dictionaries(
        {"role": hostile(st.sampled_from(["user", "system", "developer", "assistant"]))},
        optional={
            "type": hostile(st.just("message")),
            "content": st.one_of(TEXT, st.lists(INPUT_PARTS, max_size=3), JSON_VALUES),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call")},
        optional={
            "call_id": CALL_IDS,
            "name": hostile(st.sampled_from(["lookup", "", "x" * 80])),
            "arguments": mostly(st.sampled_from(["{}", '{"q": 1}', "not json", ""])),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output")},
        optional={
            "call_id": CALL_IDS,
            "output": st.one_of(TEXT, st.lists(INPUT_PARTS, max_size=2), JSON_VALUES),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["reasoning", "web_search_call"])}),
    JSON_VALUES,
)
RESPONSES_FIELDS = (
    "model",
    "input",
    "instructions",
    "stream",
    "store",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "metadata",
    "user",
    "truncation",
    "include",
    "background",
    "conversation",
    "prompt",
    "top_logprobs",
)
ANY_RESPONSES = st.fixed_dictionaries(
    {"input": st.one_of(TEXT, st.lists(INPUT_ITEMS, max_size=3), JSON_VALUES)},
    optional={name: JSON_VALUES for name in RESPONSES_FIELDS if name != "input"},
)
A_RESPONSES_TOOL = {"type": "function", **A_TOOL["function"]}
LIKELY_RESPONSES = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["kimi", "kimi-search", "kimi-thinking", "x"]),
        "input": st.one_of(
            PLAIN_TEXT,
            st.builds(
                lambda earlier, last: [*earlier, last],
                st.lists(INPUT_ITEMS, max_size=2),
                st.fixed_dictionaries(
                    {"role": st.just("user"), "content": st.one_of(PLAIN_TEXT, TEXT)}
                ),
            ),
        ),
    },
    optional={
        "instructions": mostly(PLAIN_TEXT),
        "stream": mostly(st.booleans()),
        "store": mostly(st.booleans()),
        "previous_response_id": mostly(st.sampled_from(["resp_nope", "", "\ud800"])),
        "tools": mostly(st.just([A_RESPONSES_TOOL])),
        "tool_choice": mostly(
            st.one_of(
                st.sampled_from(["auto", "none", "required"]),
                st.fixed_dictionaries(
                    {"type": hostile(st.just("function")), "name": hostile(st.just("lookup"))}
                ),
            )
        ),
        "text": mostly(
            st.fixed_dictionaries(
                {"format": hostile(st.fixed_dictionaries({"type": hostile(st.just("text"))}))}
            )
        ),
        "reasoning": mostly(
            st.fixed_dictionaries({"effort": hostile(st.sampled_from(["low", "high", "xhigh"]))})
        ),
        "max_output_tokens": mostly(st.integers(min_value=1, max_value=40)),
        "temperature": mostly(st.floats(min_value=0, max_value=2)),
        "metadata": mostly(st.dictionaries(PLAIN_TEXT, PLAIN_TEXT, max_size=2)),
    },
)
RESPONSES_BODIES = st.sampled_from(range(4)).flatmap(
    lambda roll: (LIKELY_RESPONSES, LIKELY_RESPONSES, ANY_RESPONSES, JSON_VALUES)[roll]
)


# --- Anthropic: content blocks -------------------------------------------------------------

SOURCES = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("base64")},
        optional={
            "media_type": mostly(st.sampled_from(["image/png", "application/pdf", "text/plain"])),
            "data": mostly(st.sampled_from(["aGVsbG8=", "JVBERi0=", "", "!!!", "\ud800"])),
        },
    ),
    st.fixed_dictionaries({"type": st.just("url")}, optional={"url": mostly(URLS)}),
    st.fixed_dictionaries({"type": st.just("text")}, optional={"data": mostly(TEXT)}),
    st.fixed_dictionaries(
        {"type": st.just("content")},
        optional={
            "content": st.one_of(
                TEXT,
                st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})),
                JSON_VALUES,
            )
        },
    ),
    st.fixed_dictionaries({"type": st.just("file"), "file_id": JSON_VALUES}),
    JSON_VALUES,
)
LEAF_BLOCKS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": mostly(TEXT)}),
    st.fixed_dictionaries({"type": st.just("image"), "source": SOURCES}),
    st.fixed_dictionaries(
        {"type": st.just("document"), "source": SOURCES}, optional={"title": mostly(TEXT)}
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_use")},
        optional={
            "id": mostly(st.sampled_from(["toolu_1", "toolu_2", ""])),
            "name": hostile(st.sampled_from(["lookup", "", "\ud800"])),
            "input": mostly(st.dictionaries(PLAIN_TEXT, JSON_VALUES, max_size=2)),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["thinking", "redacted_thinking"])},
        optional={"thinking": JSON_VALUES, "signature": JSON_VALUES},
    ),
    st.fixed_dictionaries({"type": WRONG_TYPES}),
    JSON_VALUES,
)
CONTENT_BLOCKS = st.one_of(
    LEAF_BLOCKS,
    st.fixed_dictionaries(
        {"type": st.just("tool_result")},
        optional={
            "tool_use_id": mostly(st.sampled_from(["toolu_1", "toolu_9", ""])),
            "content": st.one_of(TEXT, st.lists(LEAF_BLOCKS, max_size=2), JSON_VALUES),
            "is_error": mostly(st.booleans()),
        },
    ),
)
ANTHROPIC_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": hostile(st.sampled_from(["user", "assistant"]))},
        optional={"content": st.one_of(TEXT, st.lists(CONTENT_BLOCKS, max_size=3), JSON_VALUES)},
    ),
    max_size=3,
)
MESSAGES_FIELDS = (
    "model",
    "max_tokens",
    "system",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "stop_sequences",
    "temperature",
    "top_k",
    "top_p",
    "metadata",
)
ANY_MESSAGES = st.fixed_dictionaries(
    {"messages": st.one_of(ANTHROPIC_MESSAGES, JSON_VALUES)},
    optional={name: JSON_VALUES for name in MESSAGES_FIELDS},
)
AN_ANTHROPIC_TOOL = {
    "name": "lookup",
    "input_schema": {"type": "object", "properties": {}},
}
LIKELY_MESSAGES = st.fixed_dictionaries(
    {
        "model": mostly(st.sampled_from(["claude-sonnet-4-5", "claude-3-haiku", "kimi", "x"])),
        "max_tokens": mostly(st.one_of(st.integers(min_value=1, max_value=64), NUMBERS)),
        "messages": st.builds(
            lambda earlier, last: [*earlier, last],
            ANTHROPIC_MESSAGES,
            st.fixed_dictionaries(
                {
                    "role": st.just("user"),
                    "content": st.one_of(
                        PLAIN_TEXT, st.lists(CONTENT_BLOCKS, min_size=1, max_size=2)
                    ),
                }
            ),
        ),
    },
    optional={
        "system": mostly(
            st.one_of(
                PLAIN_TEXT, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}))
            )
        ),
        "stream": mostly(st.booleans()),
        "tools": mostly(
            st.sampled_from(
                [[AN_ANTHROPIC_TOOL], [{"type": "web_search_20250305", "name": "web_search"}]]
            )
        ),
        "tool_choice": mostly(
            st.fixed_dictionaries(
                {"type": hostile(st.sampled_from(["auto", "any", "tool", "none"]))},
                optional={
                    "name": hostile(st.just("lookup")),
                    "disable_parallel_tool_use": hostile(st.booleans()),
                },
            )
        ),
        "thinking": mostly(
            st.fixed_dictionaries(
                {"type": hostile(st.sampled_from(["enabled", "adaptive", "disabled"]))},
                optional={"budget_tokens": hostile(st.just(1024))},
            )
        ),
        "stop_sequences": mostly(st.lists(PLAIN_TEXT, max_size=2)),
    },
)
MESSAGES_BODIES = st.sampled_from(range(4)).flatmap(
    lambda roll: (LIKELY_MESSAGES, LIKELY_MESSAGES, ANY_MESSAGES, JSON_VALUES)[roll]
)
# Anthropic clients send their key as x-api-key; some (Claude Code) as a bearer token.
KEY_HEADERS = st.sampled_from(["x-api-key", "Authorization"])


# --- checks --------------------------------------------------------------------------------


@pytest.fixture
def front_door_app(make_settings):
    return create_app(make_settings(max_request_mb=0.25, token_checks_per_minute=100_000))


def post(app, path: str, raw: bytes, headers: dict[str, str]):
    with app.test_client() as client:
        response = client.post(path, data=raw, headers=headers)
        response.get_data()  # a stream runs to its end here
        return response


def assert_sound(response, emulator) -> Any:
    """Never a 5xx or a traceback; a refused body made no upstream call. Returns the JSON
    error body, or None for a success."""
    text = response.get_data(as_text=True)
    event(f"status {response.status_code}")
    assert response.status_code < 500, text
    assert "Traceback" not in text
    if response.status_code in REFUSED_BEFORE_KIMI:
        assert emulator.state.calls() == [], text
    return response.get_json() if response.status_code >= 400 else None


def assert_openai_error_shape(error: Any) -> None:
    if error is not None:
        assert set(error) == {"error"}, error
        assert set(error["error"]) >= {"message", "type", "param", "code"}


def assert_anthropic_error_shape(error: Any) -> None:
    if error is not None:
        assert set(error) == {"type", "error"} and error["type"] == "error", error
        assert isinstance(error["error"]["type"], str) and error["error"]["type"]
        assert isinstance(error["error"]["message"], str)


def anthropic_key(header: str, kind: str, token: str) -> dict[str, str]:
    """The credential as ``authorization()`` builds it, moved to x-api-key when asked."""
    headers = authorization(kind, token)
    if header == "x-api-key" and "Authorization" in headers:
        value = headers.pop("Authorization")
        headers["x-api-key"] = value.removeprefix("Bearer ")
    return headers


# --- /v1/responses -------------------------------------------------------------------------


@FRONT_DOOR_SETTINGS
@given(body=RESPONSES_BODIES, ascii_only=st.booleans())
def test_responses_survive_any_body(front_door_app, emulator, body, ascii_only):
    token = fresh_account(emulator)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = post(front_door_app, RESPONSES_PATH, encode(body, ascii_only), headers)
    assert_openai_error_shape(assert_sound(response, emulator))


@FRONT_DOOR_SETTINGS
@given(body=RESPONSES_BODIES, auth=AUTHORIZATIONS, content_type=CONTENT_TYPES)
def test_responses_survive_any_headers(front_door_app, emulator, body, auth, content_type):
    token = fresh_account(emulator)
    headers = {**authorization(auth, token), "Content-Type": content_type}
    response = post(front_door_app, RESPONSES_PATH, encode(body, True), headers)
    assert_openai_error_shape(assert_sound(response, emulator))


# --- /v1/messages and /v1/messages/count_tokens --------------------------------------------


@pytest.mark.parametrize("path", [MESSAGES_PATH, COUNT_TOKENS_PATH])
@FRONT_DOOR_SETTINGS
@given(body=MESSAGES_BODIES, ascii_only=st.booleans(), key_header=KEY_HEADERS)
def test_messages_survive_any_body(front_door_app, emulator, path, body, ascii_only, key_header):
    token = fresh_account(emulator)
    headers = {**anthropic_key(key_header, "valid", token), "Content-Type": "application/json"}
    response = post(front_door_app, path, encode(body, ascii_only), headers)
    assert_anthropic_error_shape(assert_sound(response, emulator))
    if path == COUNT_TOKENS_PATH:
        assert emulator.state.calls() == []  # counting never asks Kimi


@FRONT_DOOR_SETTINGS
@given(
    body=MESSAGES_BODIES,
    auth=AUTHORIZATIONS,
    key_header=KEY_HEADERS,
    content_type=CONTENT_TYPES,
)
def test_messages_survive_any_headers(
    front_door_app, emulator, body, auth, key_header, content_type
):
    token = fresh_account(emulator)
    headers = {**anthropic_key(key_header, auth, token), "Content-Type": content_type}
    response = post(front_door_app, MESSAGES_PATH, encode(body, True), headers)
    assert_anthropic_error_shape(assert_sound(response, emulator))


# --- deep nesting at both doors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "check"),
    [
        (RESPONSES_PATH, b"input", assert_openai_error_shape),
        (MESSAGES_PATH, b"messages", assert_anthropic_error_shape),
    ],
)
@FRONT_DOOR_SETTINGS
@given(depth=st.integers(min_value=1, max_value=3000), closed=st.booleans())
def test_front_doors_survive_any_nesting(
    front_door_app, emulator, path, field, check, depth, closed
):
    token = fresh_account(emulator)
    raw = b'{"model": "kimi", "max_tokens": 8, "' + field + b'": ' + b"[" * depth
    raw += (b"]" * depth if closed else b"") + b"}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = post(front_door_app, path, raw, headers)
    error = assert_sound(response, emulator)
    assert error is not None  # nested empty arrays are never a valid input
    check(error)


# --- regressions found by the properties above ---------------------------------------------


def a_messages_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


@pytest.mark.parametrize("kind", [{}, ["auto"], {"type": "auto"}])
def test_an_anthropic_tool_choice_type_that_is_not_a_string_is_a_400(kind):
    with pytest.raises(BadRequest) as caught:
        parse_messages_request(a_messages_body(tool_choice={"type": kind}))
    assert caught.value.param == "tool_choice"


def test_a_tool_choice_type_object_is_an_anthropic_400_before_kimi(front_door_app, emulator):
    token = fresh_account(emulator)
    response = front_door_app.test_client().post(
        COUNT_TOKENS_PATH,
        json=a_messages_body(tool_choice={"type": {}}),
        headers={"x-api-key": token},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["type"] == "invalid_request_error"
    assert emulator.state.calls() == []


@pytest.mark.parametrize("role", [["user"], {"user": 1}])
def test_a_responses_input_role_that_is_not_a_string_is_a_400(role):
    with pytest.raises(BadRequest) as caught:
        parse_responses_request({"input": [{"role": role, "content": "hi"}]})
    assert caught.value.param == "input[0].role"


def test_a_responses_role_list_is_an_openai_400_before_kimi(front_door_app, emulator):
    token = fresh_account(emulator)
    response = front_door_app.test_client().post(
        RESPONSES_PATH,
        json={"model": "kimi", "input": [{"role": ["user"], "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "input[0].role"
    assert emulator.state.calls() == []
