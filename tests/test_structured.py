"""response_format: parsed from the body, told to the model, and checked on the answer."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from kimi.errors import BadRequest, InvalidJsonOutput
from kimi.events import Finish, ReasoningDelta, TextDelta
from kimi.structured import (
    JSON_OBJECT,
    JSON_SCHEMA,
    ResponseFormat,
    check_json,
    enforce_json,
    format_instructions,
    parse_response_format,
)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature": {"type": "number"},
        "unit": {"enum": ["C", "F"]},
        "days": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"day": {"type": "string"}, "high": {"type": "integer"}},
                "required": ["day", "high"],
            },
        },
        "note": {"type": ["string", "null"]},
    },
    "required": ["city", "temperature"],
    "additionalProperties": False,
}

# What pydantic v2 emits for models with a nested model, an enum, an Optional and recursion.
PYDANTIC = {
    "$defs": {
        "Condition": {"enum": ["sunny", "rainy"], "title": "Condition", "type": "string"},
        "Day": {
            "properties": {
                "date": {"title": "Date", "type": "string"},
                "condition": {"$ref": "#/$defs/Condition"},
            },
            "required": ["date", "condition"],
            "title": "Day",
            "type": "object",
        },
        "Region": {
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "parts": {"items": {"$ref": "#/$defs/Region"}, "title": "Parts", "type": "array"},
            },
            "required": ["name"],
            "title": "Region",
            "type": "object",
        },
    },
    "properties": {
        "days": {"items": {"$ref": "#/$defs/Day"}, "title": "Days", "type": "array"},
        "region": {"anyOf": [{"$ref": "#/$defs/Region"}, {"type": "null"}], "default": None},
    },
    "required": ["days"],
    "title": "Forecast",
    "type": "object",
}

OBJECT = ResponseFormat(JSON_OBJECT)


def schema_format(schema: dict) -> ResponseFormat:
    return ResponseFormat(JSON_SCHEMA, schema=schema, name="answer")


def rejected(text: str, fmt: ResponseFormat) -> str:
    with pytest.raises(InvalidJsonOutput) as caught:
        check_json(text, fmt)
    assert caught.value.status == 502
    assert caught.value.code == "invalid_json_output"
    return caught.value.message


def bad_request(response_format) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_response_format({"response_format": response_format})
    return caught.value


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [{}, {"response_format": None}, {"response_format": {"type": "text"}}]
)
def test_plain_text_needs_no_format(body):
    assert parse_response_format(body) is None


def test_json_object_is_parsed():
    assert parse_response_format({"response_format": {"type": "json_object"}}) == OBJECT


def test_json_schema_keeps_name_schema_description_and_strict():
    raw = {"name": "weather", "schema": WEATHER, "strict": True, "description": "A forecast"}
    fmt = parse_response_format({"response_format": {"type": "json_schema", "json_schema": raw}})
    assert fmt == ResponseFormat(
        JSON_SCHEMA, schema=WEATHER, name="weather", description="A forecast", strict=True
    )


@pytest.mark.parametrize(
    "response_format, param",
    [
        ("json", "response_format"),
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": WEATHER}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "strict": "yes"}},
            "response_format.json_schema.strict",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "description": 3}},
            "response_format.json_schema.description",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "schema": "object"}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "string"}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"$ref": "#/$defs/Missing"}},
            },
            "response_format.json_schema.schema",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"$ref": "https://x.test/s.json"}},
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_a_malformed_response_format_is_refused_naming_the_field(response_format, param):
    error = bad_request(response_format)
    assert error.status == 400
    assert error.param == param


# --- the prompt -------------------------------------------------------------------------------


def test_json_object_instructions_ask_for_only_an_object():
    text = format_instructions(OBJECT)
    assert "JSON object" in text
    assert "no prose" in text and "code fence" in text


def test_schema_instructions_carry_the_schema_name_and_description():
    fmt = ResponseFormat(JSON_SCHEMA, schema=WEATHER, name="weather", description="A forecast")
    text = format_instructions(fmt)
    schema_line = next(line for line in text.splitlines() if line.startswith("{"))
    assert json.loads(schema_line) == WEATHER
    assert "weather: A forecast" in text
    assert "code fence" in text


# --- check_json: finding the JSON -------------------------------------------------------------

FOUND = [
    '{"city": "Paris", "temperature": 21.5}',
    '```json\n{"city": "Paris", "temperature": 21.5}\n```',
    '```\n{"city": "Paris",\n "temperature": 21.5}\n```\n',
    'Here is the forecast:\n```json\n{"city": "Paris", "temperature": 21.5}\n```\nEnjoy!',
    'Sure! {"city": "Paris", "temperature": 21.5}',
    'With {braces} in the prose:\n```json\n{"city": "Paris", "temperature": 21.5}\n```',
    '{"city": "Paris", "temperature": 21.5}\n\nThis object lists the temperature in Celsius.',
]


@pytest.mark.parametrize("text", FOUND)
def test_the_json_is_found_alone_fenced_or_between_prose(text):
    assert check_json(text, schema_format(WEATHER)) == '{"city":"Paris","temperature":21.5}'


def test_a_json_string_holding_a_code_fence_is_left_whole():
    text = '{"code": "```py\\nprint(1)\\n```"}'
    assert json.loads(check_json(text, OBJECT)) == {"code": "```py\nprint(1)\n```"}


def test_non_ascii_text_is_kept_as_is():
    assert check_json('{"城市": "北京"}', OBJECT) == '{"城市":"北京"}'


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"city": "Paris",}', "not valid JSON"),
        ('```json\n{"city": "Paris"\n```', "not valid JSON"),
        ("I cannot answer that in JSON.", "no JSON object"),
        ("   ", "empty"),
        ('{"a": 1} and also {"b": 2}', "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not array"),
    ],
)
def test_an_answer_that_is_not_one_json_object_is_rejected_with_the_reason(text, problem):
    assert problem in rejected(text, OBJECT)


# --- check_json: the schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, problem",
    [
        ({"temperature": 3}, "$.city: required key missing"),
        ({"city": "Paris", "temperature": "warm"}, "$.temperature: expected number, got string"),
        ({"city": 5, "temperature": 1}, "$.city: expected string, got integer"),
        ({"city": "P", "temperature": True}, "$.temperature: expected number, got boolean"),
        ({"city": "P", "temperature": 1, "unit": "K"}, '$.unit: must be one of "C", "F"; got "K"'),
        ({"city": "P", "temperature": 1, "wind": 3}, "$.wind: key not allowed by the schema"),
        (
            {"city": "P", "temperature": 1, "days": [{"day": "Mon", "high": 20}, {"day": "Tue"}]},
            "$.days[1].high: required key missing",
        ),
        (
            {"city": "P", "temperature": 1, "days": [{"day": "Mon", "high": 20.5}]},
            "$.days[0].high: expected integer, got number",
        ),
        ({"city": "P", "temperature": 1, "days": {"day": "Mon"}}, "$.days: expected array"),
        ({"city": "P", "temperature": 1, "note": 7}, "$.note: expected string or null"),
        (["Paris"], "$: expected object, got array"),
    ],
)
def test_a_schema_mismatch_names_the_path_and_the_problem(value, problem):
    message = rejected(json.dumps(value), schema_format(WEATHER))
    assert problem in message


@pytest.mark.parametrize(
    "value",
    [
        {"city": "Paris", "temperature": 21},
        {"city": "Paris", "temperature": -3.5, "unit": "C", "note": None},
        {"city": "Oslo", "temperature": 1, "days": [{"day": "Mon", "high": 2.0}]},
    ],
)
def test_a_matching_answer_passes_unchanged(value):
    assert json.loads(check_json(json.dumps(value), schema_format(WEATHER))) == value


def test_every_problem_is_listed_up_to_a_readable_number():
    schema = {"type": "object", "required": [f"k{i}" for i in range(8)]}
    message = rejected("{}", schema_format(schema))
    assert "$.k0: required key missing" in message and "$.k4: required key missing" in message
    assert "$.k5" not in message
    assert "and 3 more problems" in message


def test_a_key_that_is_not_an_identifier_is_quoted_in_the_path():
    schema = {"type": "object", "properties": {"first name": {"type": "string"}}}
    assert '$["first name"]: expected string' in rejected(
        '{"first name": 1}', schema_format(schema)
    )


@pytest.mark.parametrize(
    "value, ok",
    [(1, False), ("1", False), (True, True), ({"v": True}, False)],
)
def test_const_and_enum_do_not_confuse_true_with_one(value, ok):
    fmt = schema_format({"type": "object", "properties": {"v": {"const": True}}})
    text = json.dumps({"v": value})
    if ok:
        assert check_json(text, fmt) == '{"v":true}'
    else:
        assert "$.v: must be true" in rejected(text, fmt)


def test_any_of_reports_the_problems_of_the_branch_whose_type_fits():
    schema = {
        "type": "object",
        "properties": {
            "place": {
                "anyOf": [
                    {"type": "object", "required": ["lat", "lon"]},
                    {"type": "null"},
                ]
            }
        },
    }
    message = rejected('{"place": {"lat": 1}}', schema_format(schema))
    assert "$.place.lon: required key missing" in message
    assert "allowed shapes (null or string)" in rejected(
        '{"place": 3}',
        schema_format({"properties": {"place": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}),
    )


def test_a_pydantic_schema_with_defs_is_followed_through_refs_and_recursion():
    fmt = schema_format(PYDANTIC)
    good = {
        "days": [{"date": "2024-05-01", "condition": "sunny"}],
        "region": {"name": "EU", "parts": [{"name": "FR", "parts": [{"name": "Paris"}]}]},
    }
    assert json.loads(check_json(json.dumps(good), fmt)) == good
    bad_enum = {"days": [{"date": "2024-05-01", "condition": "snowy"}]}
    assert '$.days[0].condition: must be one of "sunny", "rainy"' in rejected(
        json.dumps(bad_enum), fmt
    )
    deep = {"days": [], "region": {"name": "EU", "parts": [{"parts": []}]}}
    assert "$.region.parts[0].name: required key missing" in rejected(json.dumps(deep), fmt)


def test_a_ref_cycle_in_the_schema_is_reported_not_followed_forever():
    schema = {
        "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
        "$ref": "#/$defs/A",
    }
    assert "$ref" in rejected("{}", schema_format(schema))


def test_the_repair_message_says_what_to_fix():
    message = rejected('{"temperature": "warm"}', schema_format(WEATHER))
    assert message == (
        "The answer's JSON does not match the schema: $.city: required key missing; "
        "$.temperature: expected number, got string."
    )


# --- enforce_json -----------------------------------------------------------------------------

FENCED_ANSWERS = [
    # (what the model wrote, what the client sees)
    ('```json\n{"a": [1, 2], "b": "x}y"}\n```', '{"a": [1, 2], "b": "x}y"}'),
    ('```\n{"q": "say \\"}\\" ok"}\n```\n', '{"q": "say \\"}\\" ok"}'),
    ('Here it is:\n```json\n{"n": {"m": []}}\n```\nAnything else?', '{"n": {"m": []}}'),
    ('{"plain": true}', '{"plain": true}'),
    ('[{"x": "]"}, {"y": 2}]', '[{"x": "]"}, {"y": 2}]'),
]


def stream(text: str, cuts, fmt: ResponseFormat, finish: str = "stop") -> list:
    bounds = [0, *cuts, len(text)]
    deltas = [TextDelta(text[a:b]) for a, b in pairwise(bounds) if b > a]
    return list(enforce_json([*deltas, Finish(finish)], fmt))


def streamed_text(events) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


@pytest.mark.parametrize("text, expected", FENCED_ANSWERS)
def test_only_the_json_is_streamed_however_the_answer_is_split(text, expected):
    fmt = ResponseFormat(JSON_SCHEMA, schema={"type": ["object", "array"]}, name="any")
    for cut in range(len(text) + 1):
        events = stream(text, [cut], fmt)
        assert streamed_text(events) == expected, cut
        assert events[-1] == Finish("stop")


@pytest.mark.parametrize("text, expected", FENCED_ANSWERS)
def test_only_the_json_is_streamed_when_fed_one_character_at_a_time(text, expected):
    fmt = ResponseFormat(JSON_SCHEMA, schema={"type": ["object", "array"]}, name="any")
    assert streamed_text(stream(text, range(1, len(text)), fmt)) == expected


def test_a_streamed_answer_that_breaks_the_schema_raises_at_the_end():
    fmt = schema_format(WEATHER)
    source = enforce_json([TextDelta('{"city": '), TextDelta('"Paris"}'), Finish("stop")], fmt)
    assert next(source) == TextDelta('{"city": ')
    assert next(source) == TextDelta('"Paris"}')
    with pytest.raises(InvalidJsonOutput, match=r"\$\.temperature: required key missing"):
        next(source)


def test_a_streamed_answer_that_is_not_json_raises_at_the_end():
    with pytest.raises(InvalidJsonOutput, match="no JSON object"):
        stream("Sorry, I can only answer in prose.", [10], OBJECT)


def test_an_answer_cut_by_length_is_passed_on_unchecked():
    events = stream('```json\n{"city": "Par', [5], schema_format(WEATHER), finish="length")
    assert streamed_text(events) == '{"city": "Par'
    assert events[-1] == Finish("length")


def test_reasoning_passes_through_json_enforcement():
    events = [ReasoningDelta("a {thought}"), TextDelta('{"a": 1}'), Finish()]
    assert list(enforce_json(events, OBJECT)) == events


def test_no_format_passes_everything_through():
    events = [TextDelta("just prose"), Finish()]
    assert list(enforce_json(events, None)) == events
