"""The Python ``openai`` SDK, sync and async, driving tools, sampling limits and parse().

What a user of the SDK sees against the service: tool calls as SDK objects, a loop that feeds
them back, streamed calls reassembled by the SDK's own helpers, ``finish_reason`` for
``max_tokens`` and ``stop``, and ``parse()`` with a pydantic model. The emulator plays the
``[[emulate: ...]]`` script in the prompt (kimi_emulator/scripts.py).
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from helpers import TIME_TOOL as TIME
from helpers import WEATHER_TOOL as WEATHER
from pydantic import BaseModel

from kimi.settings import PROTOCOLS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

PARIS_CALL = '[[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]'


class City(BaseModel):
    city: str
    temp: float


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str


@pytest.fixture
def sdk(live_server, account) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=account.refresh_token, max_retries=0, timeout=20
    )


@pytest.fixture
def async_sdk(live_server, account):
    """A factory: an ``AsyncOpenAI`` is bound to the event loop it is used in, so each
    ``asyncio.run`` makes its own."""

    def make() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=live_server.url + "/v1",
            api_key=account.refresh_token,
            max_retries=0,
            timeout=20,
        )

    return make


def ask(content: str) -> list:
    return [{"role": "user", "content": content}]


def tool_result(call, result: dict) -> dict:
    return {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}


# --- tool calls, sync ----------------------------------------------------------------------


def test_a_call_comes_back_as_sdk_tool_call_objects(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask(f"Weather in Paris? {PARIS_CALL}"), tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_the_sdk_message_and_a_tool_result_bring_the_final_answer(sdk):
    messages = ask(f"Weather in Paris? {PARIS_CALL}")
    first = sdk.chat.completions.create(model="kimi", messages=messages, tools=[WEATHER])
    message = first.choices[0].message
    messages += [message, tool_result(message.tool_calls[0], {"temp": 21})]

    final = sdk.chat.completions.create(model="kimi", messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "It is 21 degrees in Paris."
    assert final.choices[0].message.tool_calls is None


def test_parallel_calls_are_separate_tool_calls_with_distinct_ids(sdk):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_time {"tz": "CET"}]]'
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask(script), tools=[WEATHER, TIME]
    )
    calls = completion.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"tz": "CET"}]
    assert len({c.id for c in calls}) == 2


def test_a_named_tool_choice_gets_that_function_called(sdk):
    completion = sdk.chat.completions.create(
        model="kimi",
        messages=ask('What time is it? [[emulate: call get_time {"tz": "UTC"}]]'),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments) == {"tz": "UTC"}


def test_a_named_tool_choice_does_not_return_a_call_to_another_function(sdk):
    completion = sdk.chat.completions.create(
        model="kimi",
        messages=ask(f"Weather? {PARIS_CALL}"),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


def test_tool_choice_none_answers_in_text_without_tool_calls(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask(f"Weather? {PARIS_CALL}"), tools=[WEATHER], tool_choice="none"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert "get_weather" in choice.message.content


def test_a_three_step_loop_driven_by_sdk_objects_reaches_its_answer(sdk):
    script = (
        '[[emulate: call get_weather {"city": "Paris"} ;; call get_time {"tz": "CET"}'
        " ;; text In Paris it is 21 degrees at noon.]]"
    )
    results = {"get_weather": {"temp": 21}, "get_time": {"time": "12:00"}}
    messages = ask(f"Plan my walk. {script}")
    called = []
    for _ in range(5):  # bounded: a loop that never stops fails instead of hanging
        completion = sdk.chat.completions.create(
            model="kimi", messages=messages, tools=[WEATHER, TIME]
        )
        choice = completion.choices[0]
        if choice.finish_reason == "stop":
            break
        messages.append(choice.message)
        for call in choice.message.tool_calls:
            called.append(call.function.name)
            messages.append(tool_result(call, results[call.function.name]))
    assert called == ["get_weather", "get_time"]
    assert choice.finish_reason == "stop"
    assert choice.message.content == "In Paris it is 21 degrees at noon."


def test_a_malformed_call_reaches_the_sdk_as_plain_text(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask("[[emulate: malformed-call get_weather]]"), tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert "get_weather" in choice.message.content


def test_a_strict_pydantic_tool_comes_back_parsed(sdk):
    completion = sdk.chat.completions.parse(
        model="kimi",
        messages=ask('[[emulate: call GetWeather {"city": "Paris"}]]'),
        tools=[openai.pydantic_function_tool(GetWeather)],
    )
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.parsed_arguments == GetWeather(city="Paris")


# --- streamed tool calls -------------------------------------------------------------------


def test_the_stream_helper_reassembles_streamed_calls(sdk):
    script = '[[emulate: prose-call get_weather {"city": "Paris"} ++ call get_time {"tz": "CET"}]]'
    with sdk.chat.completions.stream(
        model="kimi", messages=ask(script), tools=[WEATHER, TIME]
    ) as stream:
        done = [
            (event.name, json.loads(event.arguments))
            for event in stream
            if event.type == "tool_calls.function.arguments.done"
        ]
        final = stream.get_final_completion()
    assert done == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up for you."
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather", "get_time"]


def test_tool_call_deltas_accumulate_into_whole_calls(sdk):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_time {"tz": "CET"}]]'
    stream = sdk.chat.completions.create(
        model="kimi", messages=ask(script), tools=[WEATHER, TIME], stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert all(c["id"] for c in calls.values())


# --- max_tokens and stop -------------------------------------------------------------------


def test_max_tokens_ends_the_answer_with_finish_reason_length(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask("Tell me a long story please"), max_tokens=3
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content and "story" not in choice.message.content
    assert completion.usage.completion_tokens <= 3


def test_max_tokens_in_the_stream_helper_raises_the_sdks_length_error(sdk):
    # The SDK's stream helper treats a cut answer as unparseable: it raises, carrying the
    # completion it assembled.
    with sdk.chat.completions.stream(
        model="kimi", messages=ask("Tell me a long story please"), max_tokens=3
    ) as stream:
        text = "".join(event.delta for event in stream if event.type == "content.delta")
        with pytest.raises(openai.LengthFinishReasonError) as info:
            stream.get_final_completion()
    assert text and "story" not in text
    assert info.value.completion.choices[0].finish_reason == "length"
    assert info.value.completion.choices[0].message.content == text


def test_a_stop_sequence_split_across_chunks_cuts_the_stream(sdk):
    # The emulator sends "Emulator reply to: say one two three" a word or two per frame, so
    # "y one t" spans frames.
    stream = sdk.chat.completions.create(
        model="kimi", messages=ask("say one two three"), stop=["y one t"], stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Emulator reply to: sa"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_stop_sequence_cuts_a_whole_answer(sdk):
    completion = sdk.chat.completions.create(
        model="kimi", messages=ask("say one two three"), stop="two"
    )
    assert completion.choices[0].message.content == "Emulator reply to: say one "
    assert completion.choices[0].finish_reason == "stop"


# --- parse() with a pydantic response_format -----------------------------------------------


def test_parse_returns_the_pydantic_object(sdk):
    completion = sdk.chat.completions.parse(
        model="kimi",
        messages=ask('Paris now? [[emulate: json {"city": "Paris", "temp": 21}]]'),
        response_format=City,
    )
    message = completion.choices[0].message
    assert message.parsed == City(city="Paris", temp=21)
    assert message.refusal is None


def test_parse_reads_json_a_model_wraps_in_a_fence(sdk):
    completion = sdk.chat.completions.parse(
        model="kimi",
        messages=ask('[[emulate: fenced-json {"city": "Paris", "temp": 21.5}]]'),
        response_format=City,
    )
    assert completion.choices[0].message.parsed == City(city="Paris", temp=21.5)


def test_the_stream_helper_parses_streamed_json_into_the_pydantic_object(sdk):
    with sdk.chat.completions.stream(
        model="kimi",
        messages=ask('[[emulate: fenced-json {"city": "Paris", "temp": 21}]]'),
        response_format=City,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == City(city="Paris", temp=21)
    assert json.loads(final.choices[0].message.content) == {"city": "Paris", "temp": 21}


def test_parse_gets_the_repaired_json_after_one_bad_answer(sdk):
    script = '[[emulate: json {"city": "Paris"} ;; json {"city": "Paris", "temp": 21}]]'
    completion = sdk.chat.completions.parse(
        model="kimi", messages=ask(script), response_format=City
    )
    assert completion.choices[0].message.parsed == City(city="Paris", temp=21)


def test_parse_raises_a_502_status_error_when_the_json_stays_invalid(sdk):
    script = '[[emulate: json {"city": "Paris"} ;; text Sorry, no.]]'
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.parse(model="kimi", messages=ask(script), response_format=City)
    assert info.value.status_code == 502
    assert info.value.code == "invalid_json_output"


# --- the async client ----------------------------------------------------------------------


def test_async_tool_round_trip(async_sdk):
    async def run():
        async with async_sdk() as client:
            messages = ask(f"Weather in Paris? {PARIS_CALL}")
            first = await client.chat.completions.create(
                model="kimi", messages=messages, tools=[WEATHER]
            )
            message = first.choices[0].message
            messages += [message, tool_result(message.tool_calls[0], {"temp": 21})]
            final = await client.chat.completions.create(
                model="kimi", messages=messages, tools=[WEATHER]
            )
            return first, final

    first, final = asyncio.run(run())
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert final.choices[0].message.content == "It is 21 degrees in Paris."


def test_async_parallel_calls(async_sdk):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_time {"tz": "CET"}]]'

    async def run():
        async with async_sdk() as client:
            return await client.chat.completions.create(
                model="kimi", messages=ask(script), tools=[WEATHER, TIME]
            )

    calls = asyncio.run(run()).choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]


def test_async_stream_helper_reassembles_a_call(async_sdk):
    async def run():
        async with async_sdk() as client:
            async with client.chat.completions.stream(
                model="kimi", messages=ask(PARIS_CALL), tools=[WEATHER]
            ) as stream:
                names = [
                    event.name
                    async for event in stream
                    if event.type == "tool_calls.function.arguments.done"
                ]
                return names, await stream.get_final_completion()

    names, final = asyncio.run(run())
    assert names == ["get_weather"]
    (call,) = final.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_async_stop_sequence_across_chunks(async_sdk):
    async def run():
        async with async_sdk() as client:
            stream = await client.chat.completions.create(
                model="kimi", messages=ask("say one two three"), stop=["y one t"], stream=True
            )
            return [chunk async for chunk in stream if chunk.choices]

    chunks = asyncio.run(run())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Emulator reply to: sa"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_max_tokens_says_length(async_sdk):
    async def run():
        async with async_sdk() as client:
            return await client.chat.completions.create(
                model="kimi", messages=ask("Tell me a long story please"), max_tokens=3
            )

    assert asyncio.run(run()).choices[0].finish_reason == "length"


def test_async_parse_returns_the_pydantic_object(async_sdk):
    async def run():
        async with async_sdk() as client:
            return await client.chat.completions.parse(
                model="kimi",
                messages=ask('[[emulate: json {"city": "Paris", "temp": 21}]]'),
                response_format=City,
            )

    assert asyncio.run(run()).choices[0].message.parsed == City(city="Paris", temp=21)


def test_async_parse_raises_the_502_for_invalid_json(async_sdk):
    async def run():
        async with async_sdk() as client:
            await client.chat.completions.parse(
                model="kimi",
                messages=ask('[[emulate: json {"city": "Paris"} ;; text Sorry, no.]]'),
                response_format=City,
            )

    with pytest.raises(openai.APIStatusError) as info:
        asyncio.run(run())
    assert info.value.status_code == 502 and info.value.code == "invalid_json_output"
