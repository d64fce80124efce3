"""An OpenAI chat body becomes one internal request: prompt, conversation, model options."""

from __future__ import annotations

import pytest

from kimi.chat_request import parse_chat_request
from kimi.errors import BadRequest
from kimi.history import FOCUS_HINT, FileRef
from kimi.models import ModelOptions, parse_model


def body(messages=None, **fields) -> dict:
    data = {"model": "kimi", "messages": messages or [{"role": "user", "content": "hi"}]}
    data.update(fields)
    return data


def bad_request(data) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(data)
    return caught.value


# --- messages and content -----------------------------------------------------------------


def test_one_user_message_is_sent_unchanged():
    request = parse_chat_request(body([{"role": "user", "content": "What is 2+2?"}]))
    assert request.prompt == "What is 2+2?"
    assert request.latest_prompt == "What is 2+2?"


def test_text_parts_are_joined_like_a_string():
    parts = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    request = parse_chat_request(body([{"role": "user", "content": parts}]))
    assert request.prompt == "line one\nline two"


def test_an_unsupported_part_is_a_bad_request_naming_the_part():
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]
    error = bad_request(body([{"role": "user", "content": parts}]))
    assert error.param == "messages[0].content[1]"
    assert "input_audio" in error.message
    assert error.status == 400


@pytest.mark.parametrize(
    "part, expected",
    [
        (
            {"type": "file", "file_url": {"url": "https://docs.test/a.pdf"}},
            FileRef("https://docs.test/a.pdf"),
        ),
        (
            {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}},
            FileRef("https://img.test/cat.png", kind="image"),
        ),
        (
            {
                "type": "file",
                "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"},
            },
            FileRef("data:text/plain;base64,aGk=", filename="a.txt"),
        ),
    ],
)
def test_the_three_file_part_shapes_become_files_of_the_message(part, expected):
    request = parse_chat_request(body([{"role": "user", "content": [part]}]))
    assert request.files == (expected,)
    assert request.prompt == f"\n[{expected.kind}: {expected.name}]"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file": {"file_id": "file-123"}},
        {"type": "file", "file_url": {"url": "ftp://x/y"}},
        {"type": "image_url", "image_url": {"url": ""}},
    ],
)
def test_a_file_part_without_a_usable_url_is_a_bad_request(part):
    error = bad_request(body([{"role": "user", "content": [part]}]))
    assert error.param == "messages[0].content[0]"


def test_too_many_files_in_one_message_is_a_bad_request():
    part = {"type": "file", "file_url": {"url": "https://docs.test/a.pdf"}}
    with pytest.raises(BadRequest) as info:
        parse_chat_request(body([{"role": "user", "content": [part] * 3}]), max_files=2)
    assert info.value.code == "too_many_files"


def test_files_of_earlier_messages_are_only_named_in_the_history():
    part = {"type": "file", "file_url": {"url": "https://docs.test/report.pdf"}}
    request = parse_chat_request(
        body(
            [
                {"role": "user", "content": [{"type": "text", "text": "read this"}, part]},
                {"role": "assistant", "content": "done"},
                {"role": "user", "content": "summarise it"},
            ]
        )
    )
    assert request.files == ()
    assert request.prompt.splitlines()[:2] == ["user:read this", "[file: report.pdf]"]


@pytest.mark.parametrize(
    "messages, param",
    [
        ([], "messages"),
        ("hello", "messages"),
        ({"role": "user", "content": "hi"}, "messages"),
        (None, "messages"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": "ok"}, {"content": "no role"}], "messages[1].role"),
        (["just a string"], "messages[0]"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([{"role": "user", "content": "   "}], "messages"),
    ],
    ids=[
        "empty",
        "string",
        "object",
        "missing",
        "unknown-role",
        "missing-role",
        "non-object-message",
        "number-content",
        "blank-only",
    ],
)
def test_invalid_messages_are_a_bad_request_naming_the_field(messages, param):
    data = {"model": "kimi", "messages": messages}
    assert bad_request(data).param == param


@pytest.mark.parametrize(
    "field, value",
    [("n", 2), ("n", "1"), ("n", True), ("stream", "true"), ("stream", 1), ("model", 3)],
)
def test_invalid_top_level_field_is_a_bad_request_naming_it(field, value):
    assert bad_request(body(**{field: value})).param == field


def test_body_that_is_not_an_object_is_a_bad_request():
    bad_request(["not", "an", "object"])


def test_sampling_knobs_the_web_chat_lacks_and_unknown_fields_are_ignored():
    request = parse_chat_request(body(temperature=0.2, top_p=1, user="me", frobnicate={}))
    assert request.prompt == "hi"


def test_a_malformed_tool_is_refused_not_dropped():
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(body(tools=[{"type": "function"}]))
    assert caught.value.param == "tools[0].function"


@pytest.mark.parametrize("stream", [True, False, None])
def test_stream_flag_is_read(stream):
    assert parse_chat_request(body(stream=stream)).stream is bool(stream)


@pytest.mark.parametrize(
    "options, include",
    [(None, False), ({}, False), ({"include_usage": True}, True), ({"include_usage": 1}, False)],
)
def test_include_usage_is_read_from_stream_options(options, include):
    assert parse_chat_request(body(stream=True, stream_options=options)).include_usage is include


# --- history ------------------------------------------------------------------------------

SECOND_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Weather?"},
]


def test_first_turn_history_is_role_lines_without_the_focus_hint():
    request = parse_chat_request(
        body([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    )
    assert request.prompt == "system:Be brief.\nuser:Hi"


def test_later_turn_history_has_the_focus_hint_before_the_last_message():
    request = parse_chat_request(body(SECOND_TURN))
    assert request.prompt == "\n".join(
        ["system:Be brief.", "user:Hi", "assistant:Hello!", FOCUS_HINT, "user:Weather?"]
    )


def test_latest_prompt_is_only_what_follows_the_last_assistant_message():
    assert parse_chat_request(body(SECOND_TURN)).latest_prompt == "Weather?"


def test_latest_prompt_keeps_every_message_after_the_last_reply():
    messages = [
        *SECOND_TURN[:3],
        {"role": "system", "content": "Use metric."},
        {"role": "user", "content": "Weather?"},
    ]
    assert parse_chat_request(body(messages)).latest_prompt == ("system:Use metric.\nuser:Weather?")


# --- conversation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conversation_id, continued, keep",
    [
        (None, None, False),
        ("", None, False),
        ("none", None, True),
        ("None", None, True),
        ("0b6c8a0e-1a2b-4c3d-8e9f-001122334455", "0b6c8a0e-1a2b-4c3d-8e9f-001122334455", True),
    ],
    ids=["absent", "empty", "none", "None", "id"],
)
def test_conversation_id_selects_one_shot_new_kept_or_continued_chat(
    conversation_id, continued, keep
):
    data = body() if conversation_id is None else body(conversation_id=conversation_id)
    request = parse_chat_request(data)
    assert (request.conversation_id, request.keep_chat) == (continued, keep)


def test_non_string_conversation_id_is_a_bad_request():
    assert bad_request(body(conversation_id=12)).param == "conversation_id"


# --- model rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, use_search, search",
    [
        ("kimi", False, False),
        ("kimi-search", False, True),
        ("kimi-thinking-search", False, True),
        ("kimi", True, True),
    ],
)
def test_search_from_model_name_or_use_search(model, use_search, search):
    request = parse_chat_request(body(model=model, use_search=use_search))
    assert request.options.search is search


def test_use_search_must_be_true_not_truthy():
    assert parse_chat_request(body(use_search="yes")).options.search is False


@pytest.mark.parametrize("model, silent", [("kimi-search-silent", True), ("kimi-search", False)])
def test_silent_from_model_name(model, silent):
    assert parse_model(model).silent is silent


@pytest.mark.parametrize(
    "model, effort, thinking",
    [
        ("kimi-thinking", None, True),
        ("kimi-k1", None, True),
        ("kimi-reasoner", None, True),
        ("kimi", None, False),
        ("kimi", "low", True),
        ("kimi", "medium", True),
        ("kimi", "HIGH", True),
        ("kimi-thinking", "none", False),
    ],
)
def test_thinking_from_model_name_or_reasoning_effort(model, effort, thinking):
    request = parse_chat_request(body(model=model, reasoning_effort=effort))
    assert request.options.thinking is thinking


@pytest.mark.parametrize(
    "effort, upstream", [("low", "LOW"), ("medium", "MEDIUM"), ("high", "HIGH")]
)
def test_reasoning_effort_is_passed_on(effort, upstream):
    assert parse_chat_request(body(reasoning_effort=effort)).options.effort == upstream


def test_non_string_reasoning_effort_is_a_bad_request():
    assert bad_request(body(reasoning_effort=2)).param == "reasoning_effort"


@pytest.mark.parametrize(
    "model, agent_id",
    [
        ("cqbk2ch4hv2h8svs4ag0", "cqbk2ch4hv2h8svs4ag0"),
        ("cqbk2ch4hv2h8svs4ag", None),
        ("cqbk2ch4hv2h8svs4ag01", None),
        ("CQBK2CH4HV2H8SVS4AG0", None),
        ("kimi", None),
    ],
)
def test_twenty_char_lowercase_id_selects_an_agent(model, agent_id):
    assert parse_chat_request(body(model=model)).options.agent_id == agent_id


@pytest.mark.parametrize(
    "model, scenario",
    [
        ("kimi-k2.5", "SCENARIO_K2D5"),
        ("kimi-k2.5-thinking", "SCENARIO_K2D5"),
        ("kimi-k2", "SCENARIO_K2"),
        ("kimi-ok-computer", "SCENARIO_OK_COMPUTER"),
        ("kimi", None),
    ],
)
def test_model_name_picks_the_scenario(model, scenario):
    assert parse_chat_request(body(model=model)).options.scenario == scenario


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-5-sonnet", "whatever", ""])
def test_unknown_model_names_get_default_options(model):
    request = parse_chat_request(body(model=model))
    assert request.options == ModelOptions(name=model or "kimi")


def test_missing_model_is_the_default_model():
    data = body()
    del data["model"]
    assert parse_chat_request(data).model == "kimi"


def test_model_name_is_echoed_as_given():
    assert parse_chat_request(body(model="Kimi-Search")).model == "Kimi-Search"
