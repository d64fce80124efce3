"""The request's functions (``tools`` or legacy ``functions``) become one ToolConfig, or a 400."""

from __future__ import annotations

import pytest

from kimi.errors import BadRequest
from kimi.tools.spec import ToolChoice, ToolConfig, ToolSpec, parse_tool_config

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def tool(name="get_weather", **function) -> dict:
    return {"type": "function", "function": {"name": name, **function}}


def bad_request(body: dict) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_tool_config(body)
    assert caught.value.status == 400
    return caught.value


def test_a_request_without_functions_has_no_tool_config():
    assert parse_tool_config({"messages": []}) is None
    assert parse_tool_config({"tools": None, "tool_choice": "auto"}) is None


def test_tool_choice_none_without_tools_has_no_tool_config():
    assert parse_tool_config({"tool_choice": "none"}) is None


def test_an_empty_tools_array_is_no_functions():
    assert parse_tool_config({"tools": []}) is None


def test_tools_are_read_with_name_description_and_schema():
    config = parse_tool_config(
        {"tools": [tool(description="Weather now.", parameters=WEATHER_SCHEMA), tool("ping")]}
    )
    assert config == ToolConfig(
        tools=(ToolSpec("get_weather", "Weather now.", WEATHER_SCHEMA), ToolSpec("ping")),
        choice=ToolChoice("auto"),
        parallel=True,
    )
    assert config.tool("get_weather").required == ("city",)
    assert config.tool("ping").required == ()
    assert config.tool("other") is None


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_string_tool_choices_are_read(choice):
    config = parse_tool_config({"tools": [tool()], "tool_choice": choice})
    assert config.choice == ToolChoice(choice)


def test_a_named_tool_choice_forces_that_function():
    body = {
        "tools": [tool(), tool("ping")],
        "tool_choice": {"type": "function", "function": {"name": "ping"}},
    }
    config = parse_tool_config(body)
    assert config.choice == ToolChoice("function", "ping")
    assert [t.name for t in config.callable_tools] == ["ping"]


def test_tool_choice_none_leaves_no_callable_function():
    config = parse_tool_config({"tools": [tool()], "tool_choice": "none"})
    assert config.callable_tools == ()


@pytest.mark.parametrize("value, expected", [(None, True), (True, True), (False, False)])
def test_parallel_tool_calls_defaults_to_true(value, expected):
    body = {"tools": [tool()]}
    if value is not None:
        body["parallel_tool_calls"] = value
    assert parse_tool_config(body).parallel is expected


def test_legacy_functions_allow_one_call_and_are_marked_legacy():
    config = parse_tool_config(
        {"functions": [{"name": "get_weather", "parameters": WEATHER_SCHEMA}]}
    )
    assert config.tools == (ToolSpec("get_weather", "", WEATHER_SCHEMA),)
    assert config.legacy is True
    assert config.parallel is False
    assert config.choice == ToolChoice("auto")


@pytest.mark.parametrize(
    "function_call, expected",
    [
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ({"name": "get_weather"}, ToolChoice("function", "get_weather")),
    ],
)
def test_legacy_function_call_choices_are_read(function_call, expected):
    config = parse_tool_config(
        {"functions": [{"name": "get_weather"}], "function_call": function_call}
    )
    assert config.choice == expected


# --- invalid shapes: each a 400 naming its field ---------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [tool(), "get_weather"]}, "tools[1]"),
        (
            {"tools": [tool(), tool("ok"), {"type": "function", "function": {}}]},
            "tools[2].function.name",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [tool("has space")]}, "tools[0].function.name"),
        ({"tools": [tool("x" * 65)]}, "tools[0].function.name"),
        ({"tools": [tool("")]}, "tools[0].function.name"),
        ({"tools": [tool(description=3)]}, "tools[0].function.description"),
        ({"tools": [tool(parameters="object")]}, "tools[0].function.parameters"),
        (
            {"tools": [tool(parameters={"type": "object", "required": "city"})]},
            "tools[0].function.parameters.required",
        ),
        ({"tools": [tool(), tool()]}, "tools[1].function.name"),
        ({"tools": [tool()], "tool_choice": "always"}, "tool_choice"),
        ({"tools": [tool()], "tool_choice": {"type": "function"}}, "tool_choice.function.name"),
        ({"tools": [tool()], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"tools": [tool()], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": "get_weather"}, "functions"),
        ({"functions": [{"name": "a b"}]}, "functions[0].name"),
        ({"functions": [{"name": "f"}], "function_call": "required"}, "function_call"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call.name"),
        ({"functions": [{"name": "f"}], "tools": [tool()]}, "functions"),
        ({"functions": [{"name": "f"}], "tool_choice": "auto"}, "tool_choice"),
        ({"tools": [tool()], "function_call": "auto"}, "function_call"),
    ],
)
def test_an_invalid_shape_is_a_bad_request_naming_the_field(body, param):
    assert bad_request(body).param == param


def test_a_non_function_tool_type_is_named_in_the_error():
    error = bad_request({"tools": [tool(), {"type": "web_search_preview"}]})
    assert error.param == "tools[1].type"
    assert "web_search_preview" in error.message
    assert "only function tools can be emulated" in error.message


def test_a_named_choice_not_among_the_tools_is_a_bad_request():
    error = bad_request(
        {"tools": [tool()], "tool_choice": {"type": "function", "function": {"name": "ping"}}}
    )
    assert error.param == "tool_choice.function.name"
    assert "ping" in error.message
