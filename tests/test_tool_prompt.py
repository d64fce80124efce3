"""What the model is told about the functions, and how earlier calls and results read back."""

from __future__ import annotations

import json

import pytest
from test_tool_parse import PARIS, TIME, WEATHER

from kimi.tools.markup import CALL_CLOSE, CALL_OPEN
from kimi.tools.parse import ParsedCall, parse_tool_reply
from kimi.tools.prompt import render_tool_calls, render_tool_result, tool_instructions
from kimi.tools.spec import ToolChoice, ToolConfig

SCHEMA_JSON = json.dumps(WEATHER.parameters, separators=(",", ":"))


def instructions(mode="auto", name=None, parallel=True) -> str:
    return tool_instructions(
        ToolConfig(tools=(WEATHER, TIME), choice=ToolChoice(mode, name), parallel=parallel)
    )


def test_every_function_is_described_with_its_name_description_and_schema():
    text = instructions()
    assert "get_weather: Current weather for a city." in text
    assert SCHEMA_JSON in text
    assert "get_time: The current time. (no parameters)" in text


def test_the_call_format_is_given_once_with_its_markup():
    text = instructions()
    assert text.count(CALL_OPEN + '{"name": ') == 1
    assert CALL_CLOSE in text


def test_the_model_is_told_to_stop_after_calls_and_not_to_write_results():
    text = instructions()
    assert "After the call lines, stop" in text
    assert "Never write a result yourself" in text


@pytest.mark.parametrize(
    "mode, parallel, rule",
    [
        ("auto", True, "only when that helps (several at once if useful); otherwise answer"),
        ("auto", False, "only when that helps (at most one per answer); otherwise answer"),
        ("required", True, "You must call at least one function now."),
        ("required", False, "You must call exactly one function now."),
    ],
)
def test_the_choice_rule_is_stated(mode, parallel, rule):
    assert rule in instructions(mode, parallel=parallel)


def test_a_forced_function_is_the_only_one_described_and_must_be_called():
    text = instructions("function", "get_time", parallel=False)
    assert "You must call get_time now (one call), and no other function." in text
    assert "get_weather" not in text


def test_with_tool_choice_none_the_model_is_told_not_to_call():
    text = instructions("none")
    assert "Do not call any function" in text
    assert "get_weather" not in text


def test_the_fixed_part_of_the_instructions_stays_short():
    # They are sent with every turn: only the function descriptions should grow them.
    text = instructions()
    assert len(text) - len(SCHEMA_JSON) < 800


def test_earlier_calls_are_rendered_in_the_format_the_parser_reads():
    rendered = render_tool_calls([("get_weather", '{"city": "Paris"}'), ("get_time", {})])
    assert rendered == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    config = ToolConfig(tools=(WEATHER, TIME))
    assert parse_tool_reply(rendered, config).calls == [PARIS, ParsedCall("get_time", "{}")]


def test_earlier_call_arguments_that_are_not_json_are_shown_as_given():
    rendered = render_tool_calls([("get_weather", "Paris please")])
    assert rendered == (
        '<tool_call>{"name": "get_weather", "arguments": "Paris please"}</tool_call>'
    )


def test_a_tool_result_names_the_function_and_the_call():
    rendered = render_tool_result('{"temp": 18}', name="get_weather", call_id="call_abc")
    assert rendered == (
        '<tool_result name="get_weather" call_id="call_abc">\n{"temp": 18}\n</tool_result>'
    )


def test_a_tool_result_quotes_odd_ids_and_leaves_out_unknown_names():
    rendered = render_tool_result("ok", name=None, call_id='x" y')
    assert rendered == '<tool_result call_id="x\\" y">\nok\n</tool_result>'
