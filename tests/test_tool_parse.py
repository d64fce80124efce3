"""A whole reply becomes text plus the function calls the model wrote, read leniently."""

from __future__ import annotations

import json

import pytest

from kimi.tools.lenient_json import JsonExtent, load_lenient
from kimi.tools.parse import ParsedCall, parse_tool_reply
from kimi.tools.spec import ToolChoice, ToolConfig, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", "The current time.")
CONFIG = ToolConfig(tools=(WEATHER, TIME))

PARIS = ParsedCall("get_weather", '{"city":"Paris"}')
NOW = ParsedCall("get_time", "{}")
TAGGED_PARIS = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TAGGED_NOW = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'

# reply text -> (content, calls). Shared with the streaming tests, which must agree.
REPLIES: dict[str, tuple[str, list[ParsedCall]]] = {
    # plain answers stay exactly as written
    "The weather in Paris is mild.": ("The weather in Paris is mild.", []),
    "  Leading and trailing space \n\n": ("  Leading and trailing space \n\n", []),
    "Use `x < y` and <b>bold</b>, not <tool>.": ("Use `x < y` and <b>bold</b>, not <tool>.", []),
    "Code:\n```python\nprint({'a': 1})\n```\nDone.": (
        "Code:\n```python\nprint({'a': 1})\n```\nDone.",
        [],
    ),
    '{"city": "Paris"} is the JSON you asked for.': (
        '{"city": "Paris"} is the JSON you asked for.',
        [],
    ),
    "[link](https://example.com) first.": ("[link](https://example.com) first.", []),
    "Ends with a fence ```": ("Ends with a fence ```", []),
    "Ends with a partial tag <tool_ca": ("Ends with a partial tag <tool_ca", []),
    # the format the model was given
    TAGGED_PARIS: ("", [PARIS]),
    "Let me look that up.\n\n" + TAGGED_PARIS: ("Let me look that up.", [PARIS]),
    TAGGED_PARIS + "\n" + TAGGED_NOW: ("", [PARIS, NOW]),
    TAGGED_PARIS + "\nI will wait for the result.": ("", [PARIS]),
    # fenced, with or without the tags
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```': ("", [PARIS]),
    'Checking.\n```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nOne moment.': (
        "Checking.",
        [PARIS],
    ),
    "```xml\n" + TAGGED_PARIS + "\n```": ("", [PARIS]),
    "<tool_call>\n```json\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n</tool_call>': ("", [PARIS]),
    # bare JSON as the whole answer, alone, as an array, or one after another
    '{"name": "get_weather", "arguments": {"city": "Paris"}}': ("", [PARIS]),
    ' [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time"}]': (
        "",
        [PARIS, NOW],
    ),
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n{"name": "get_time"}': (
        "",
        [PARIS, NOW],
    ),
    # how models bend the format
    '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>': (
        "",
        [PARIS],
    ),
    '<tool_call>{"name": "get_weather", "parameters": {"city": "Paris"}}</tool_call>': (
        "",
        [PARIS],
    ),
    '<tool_call>{"name": "get_weather", "args": {"city": "Paris"}}</tool_call>': ("", [PARIS]),
    '<tool_call>{"type": "function", "function": {"name": "get_weather", '
    '"arguments": "{\\"city\\": \\"Paris\\"}"}}</tool_call>': ("", [PARIS]),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris",},}</tool_call>': (
        "",
        [PARIS],
    ),
    '<tool_call>{\n  // the city asked about\n  "name": "get_weather", /* tool */\n'
    '  "arguments": {"city": "Paris"}\n}</tool_call>': ("", [PARIS]),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}}</tool_call>': (
        "",
        [PARIS],
    ),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}': ("", [PARIS]),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '<tool_call>{"name": "get_time"}': ("", [PARIS, NOW]),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "http://x.test/a//b /* c */"}}'
    "</tool_call>": ("", [ParsedCall("get_weather", '{"city":"http://x.test/a//b /* c */"}')]),
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "°C"}}'
    "</tool_call>": (
        "",
        [ParsedCall("get_weather", '{"city":"Zürich","unit":"°C"}')],
    ),
}

# Replies whose would-be call is not well-formed: each stays text, exactly as written.
NOT_CALLS = {
    "unknown function": '<tool_call>{"name": "get_stock", "arguments": {"s": "X"}}</tool_call>',
    "missing required key": '<tool_call>{"name": "get_weather", "arguments": {"unit": "C"}}'
    "</tool_call>",
    "missing arguments with a required key": '{"name": "get_weather"}',
    "arguments an array": '<tool_call>{"name": "get_weather", "arguments": ["Paris"]}</tool_call>',
    "arguments a number": '<tool_call>{"name": "get_weather", "arguments": 3}</tool_call>',
    "arguments a string not JSON": '<tool_call>{"name": "get_weather", "arguments": "Paris"}'
    "</tool_call>",
    "arguments a JSON string of an array": "<tool_call>"
    '{"name": "get_weather", "arguments": "[\\"Paris\\"]"}</tool_call>',
    "name not a string": '<tool_call>{"name": ["get_weather"], "arguments": {}}</tool_call>',
    "not JSON at all": "<tool_call>get_weather(city='Paris')</tool_call>",
    "unfinished JSON": '<tool_call>{"name": "get_weather", "arguments": {"city": "Par',
    "prose after the JSON": '<tool_call>{"name": "get_time"} and then more</tool_call>',
    "a plain JSON object": '{"city": "Paris", "temperature": 18}',
    "an empty array": "[]",
    "one bad call in a block": '[{"name": "get_time"}, {"name": "get_stock"}]',
    "fenced under another language": '```python\n{"name": "get_time"}\n```',
    "bare JSON after prose": 'Here it is: {"name": "get_time"}',
    "NaN in the arguments": '<tool_call>{"name": "get_weather", "arguments": {"city": NaN}}'
    "</tool_call>",
    "arguments nested too deep": '<tool_call>{"name": "get_time", "arguments": {"a": '
    + "[" * 100
    + "]" * 100
    + "}}</tool_call>",
}


@pytest.mark.parametrize("reply", REPLIES)
def test_a_reply_splits_into_content_and_calls(reply):
    content, calls = REPLIES[reply]
    parsed = parse_tool_reply(reply, CONFIG)
    assert (parsed.content, parsed.calls) == (content, calls)


@pytest.mark.parametrize("reply", NOT_CALLS.values(), ids=list(NOT_CALLS))
def test_a_malformed_call_is_plain_text(reply):
    parsed = parse_tool_reply(reply, CONFIG)
    assert parsed.calls == []
    assert parsed.content == reply


def test_a_malformed_call_after_a_good_one_is_dropped_with_the_text_after_it():
    reply = TAGGED_PARIS + '\n<tool_call>{"name": "get_stock"}</tool_call>\n' + TAGGED_NOW
    parsed = parse_tool_reply(reply, CONFIG)
    assert parsed.calls == [PARIS, NOW]
    assert parsed.content == ""


def test_arguments_are_never_filled_in():
    reply = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "n": 2}}</tool_call>'
    [call] = parse_tool_reply(reply, CONFIG).calls
    assert json.loads(call.arguments_json) == {"city": "Paris", "n": 2}


def test_with_parallel_calls_off_only_the_first_call_is_kept():
    config = ToolConfig(tools=(WEATHER, TIME), parallel=False)
    parsed = parse_tool_reply("One moment. " + TAGGED_NOW + TAGGED_PARIS, config)
    assert parsed.calls == [NOW]
    assert parsed.content == "One moment."


def test_a_forced_function_accepts_only_that_function():
    config = ToolConfig(tools=(WEATHER, TIME), choice=ToolChoice("function", "get_time"))
    assert parse_tool_reply(TAGGED_NOW, config).calls == [NOW]
    assert parse_tool_reply(TAGGED_PARIS, config).calls == []
    assert parse_tool_reply(TAGGED_PARIS, config).content == TAGGED_PARIS


def test_with_tool_choice_none_every_reply_is_text():
    config = ToolConfig(tools=(WEATHER, TIME), choice=ToolChoice("none"))
    parsed = parse_tool_reply(TAGGED_PARIS, config)
    assert (parsed.content, parsed.calls) == (TAGGED_PARIS, [])


def test_a_number_too_long_for_python_is_text_not_a_crash():
    reply = '<tool_call>{"name": "get_time", "arguments": {"n": ' + "9" * 5000 + "}}</tool_call>"
    assert parse_tool_reply(reply, CONFIG).content == reply


def test_a_call_longer_than_the_cap_is_text():
    reply = '<tool_call>{"name": "get_weather", "arguments": {"city": "' + "a" * 200 + '"}}'
    assert parse_tool_reply(reply, CONFIG, max_call_chars=300).calls != []
    capped = parse_tool_reply(reply + "</tool_call>", CONFIG, max_call_chars=200)
    assert (capped.content, capped.calls) == (reply + "</tool_call>", [])


# --- the lenient JSON underneath ------------------------------------------------------------


def test_lenient_json_drops_comments_and_trailing_commas_but_not_string_content():
    text = '{"a": [1, 2,], /* note */ "b": "x // y, /* z */ ]",  // end\n}'
    assert load_lenient(text) == {"a": [1, 2], "b": "x // y, /* z */ ]"}


def test_lenient_json_refuses_two_values_or_prose():
    for text in ('{"a": 1} {"b": 2}', '{"a": 1} and more', "not json"):
        with pytest.raises(ValueError):
            load_lenient(text)


@pytest.mark.parametrize(
    "text, end",
    [
        ('{"a": "}"} tail', 10),
        ('[1, {"b": [2]}]]', 15),
        ('{"a": 1 /* } */ } x', 17),
        ('{"a": 1 // }\n} x', 14),
        ('{"a": "\\"}"} x', 12),
    ],
)
def test_json_extent_finds_the_end_of_the_value_at_any_split(text, end):
    for split in range(len(text) + 1):
        extent = JsonExtent()
        first = extent.end(text[:split], limit=1000)
        assert first in (None, end)
        assert (first if first is not None else extent.end(text, limit=1000)) == end


def test_json_extent_stops_at_the_limit():
    assert JsonExtent().end('{"a": "long"}', limit=5) is None
