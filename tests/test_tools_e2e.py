"""Emulated function calling and structured output through the app, both protocols.

The emulator plays a script written in the user message (kimi_emulator/scripts.py), the way a
real model answers in the call format the instructions describe.
"""

from __future__ import annotations

import json

import pytest
from helpers import TIME_TOOL as TIME
from helpers import WEATHER_TOOL as WEATHER
from helpers import chat, sse_events, streamed_text, upstream_calls

PROTOCOLS = ["web", "legacy"]


@pytest.fixture(params=PROTOCOLS)
def protocol(request) -> str:
    return request.param


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_a_call_comes_back_as_tool_calls(client, auth):
    script = '[[emulate: call get_weather {"city": "Paris"}]]'
    body = chat(client, auth, f"Weather in Paris? {script}", tools=[WEATHER]).get_json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_the_prompt_describes_the_functions(client, auth, emulator, protocol):
    chat(client, auth, "Weather? [[emulate: text Sunny.]]", tools=[WEATHER])
    path = "ChatService/Chat" if protocol == "web" else "completion/stream"
    (call,) = upstream_calls(emulator, path)
    sent = json.dumps(call["body"], ensure_ascii=False)
    assert "get_weather" in sent and "Current weather in a city" in sent


def test_prose_before_a_call_is_the_content(client, auth):
    script = '[[emulate: prose-call get_weather {"city": "Paris"}]]'
    message = chat(client, auth, script, tools=[WEATHER]).get_json()["choices"][0]["message"]
    assert message["content"] == "Let me look that up for you."
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"


def test_parallel_calls_and_their_indexes(client, auth):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_time {"tz": "UTC"}]]'
    message = chat(client, auth, script, tools=[WEATHER, TIME]).get_json()["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


def test_parallel_tool_calls_false_keeps_one_call(client, auth):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_time {"tz": "UTC"}]]'
    body = chat(client, auth, script, tools=[WEATHER, TIME], parallel_tool_calls=False).get_json()
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1


@pytest.mark.parametrize("kind", ["fenced-call", "string-args-call"])
def test_call_variants_real_models_write_are_read(client, auth, kind):
    script = f'[[emulate: {kind} get_weather {{"city": "Paris"}}]]'
    message = chat(client, auth, script, tools=[WEATHER]).get_json()["choices"][0]["message"]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_a_malformed_call_is_plain_text(client, auth):
    body = chat(client, auth, "[[emulate: malformed-call get_weather]]", tools=[WEATHER])
    choice = body.get_json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert "get_weather" in choice["message"]["content"]


def test_a_call_missing_a_required_argument_is_not_a_call(client, auth):
    body = chat(client, auth, "[[emulate: call get_weather {}]]", tools=[WEATHER]).get_json()
    assert body["choices"][0]["finish_reason"] == "stop"


def test_tool_choice_none_sends_no_functions_and_parses_no_calls(client, auth, emulator):
    script = '[[emulate: call get_weather {"city": "Paris"}]]'
    body = chat(client, auth, script, tools=[WEATHER], tool_choice="none").get_json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "<tool_call>" in body["choices"][0]["message"]["content"]


def test_streamed_calls_arrive_as_tool_call_deltas(client, auth):
    script = '[[emulate: prose-call get_weather {"city": "Paris"} ++ call get_time {}]]'
    response = chat(client, auth, script, tools=[WEATHER, TIME], stream=True)
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == "Let me look that up for you."
    deltas = [d for e in events[:-1] for d in e["choices"][0]["delta"].get("tool_calls", [])]
    heads = [d for d in deltas if "id" in d]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [
        (0, "get_weather"),
        (1, "get_time"),
    ]
    arguments = {}
    for delta in deltas:
        arguments[delta["index"]] = (
            arguments.get(delta["index"], "") + delta["function"]["arguments"]
        )
    assert json.loads(arguments[0]) == {"city": "Paris"} and json.loads(arguments[1]) == {}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert "<tool_call>" not in response.get_data(as_text=True).split("tool_calls")[0]


def test_a_three_step_loop_runs_to_its_answer(client, auth, emulator):
    script = (
        '[[emulate: call get_weather {"city": "Paris"} ;; call get_time {"tz": "CET"}'
        " ;; text In Paris it is 21 degrees at noon.]]"
    )
    messages = ask(f"Plan my walk. {script}")
    for step in range(3):
        body = chat(client, auth, messages=messages, tools=[WEATHER, TIME]).get_json()
        message = body["choices"][0]["message"]
        if step < 2:
            assert body["choices"][0]["finish_reason"] == "tool_calls"
            call = message["tool_calls"][0]
            messages += [
                {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
                {"role": "tool", "tool_call_id": call["id"], "content": '{"result": 21}'},
            ]
    assert message["content"] == "In Paris it is 21 degrees at noon."
    last_prompt = json.dumps(upstream_calls(emulator, "")[-2]["body"], ensure_ascii=False)
    assert "get_time" in last_prompt and '\\"result\\": 21' in last_prompt


def test_legacy_functions_get_a_function_call(client, auth):
    script = '[[emulate: call get_weather {"city": "Paris"}]]'
    body = chat(client, auth, script, functions=[WEATHER["function"]]).get_json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"


def test_a_tool_that_is_not_a_function_is_a_400(client, auth, emulator):
    response = chat(client, auth, tools=[{"type": "web_search_preview"}])
    assert response.status_code == 400
    assert response.get_json()["error"]["param"].startswith("tools[0]")
    assert emulator.state.calls() == []


CITY_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
            "required": ["city", "temp"],
        },
    },
}


def test_json_object_output_is_the_bare_json(client, auth):
    script = '[[emulate: fenced-json {"city": "Paris", "temp": 21}]]'
    body = chat(client, auth, script, response_format={"type": "json_object"}).get_json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Paris", "temp": 21}


def test_json_schema_output_that_fails_is_repaired_once_in_the_same_chat(client, auth, emulator):
    script = '[[emulate: json {"city": "Paris"} ;; json {"city": "Paris", "temp": 21}]]'
    body = chat(client, auth, script, response_format=CITY_SCHEMA).get_json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Paris", "temp": 21}
    chats = list(emulator.state.chats().values())
    assert len(chats) == 1 and chats[0]["deleted"]  # one chat, repaired in place, cleaned up


def test_json_schema_output_that_stays_invalid_is_a_502_not_a_fake_success(client, auth):
    script = '[[emulate: json {"city": "Paris"} ;; text Sorry, no.]]'
    response = chat(client, auth, script, response_format=CITY_SCHEMA)
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "invalid_json_output"


def test_streamed_json_that_fails_ends_with_an_in_stream_error(client, auth):
    script = '[[emulate: json {"city": "Paris"}]]'
    response = chat(client, auth, script, response_format=CITY_SCHEMA, stream=True)
    events = sse_events(response.data)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "invalid_json_output"


def test_max_tokens_cuts_the_answer_and_says_length(client, auth, emulator):
    body = chat(client, auth, "Tell me a long story please", max_tokens=3).get_json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] <= 3
    assert choice["message"]["content"] and "story" not in choice["message"]["content"]


def test_stop_cuts_before_the_match_even_across_chunks(client, auth):
    # The emulator answers "Emulator reply to: say one two three" a word or two per frame.
    response = chat(client, auth, "say one two three", stop=["y one t"], stream=True)
    events = sse_events(response.data)
    assert streamed_text(events) == "Emulator reply to: sa"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_is_refused_with_a_reason(client, auth, emulator):
    response = chat(client, auth, logprobs=True)
    assert response.status_code == 400 and "log" in response.get_json()["error"]["message"]
    assert emulator.state.calls() == []


def test_think_tags_put_reasoning_in_the_content(client, auth, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    body = chat(client, auth, "why?", model="kimi-think-tags").get_json()
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("<think>Thinking about: why?</think>")
    assert content.endswith("Emulator reply to: why?")
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert body["usage"]["completion_tokens"] > 0


def test_reasoning_tokens_are_reported(client, auth, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    body = chat(client, auth, "why?", model="kimi-thinking").get_json()
    details = body["usage"]["completion_tokens_details"]
    assert 0 < details["reasoning_tokens"] < body["usage"]["completion_tokens"]


def test_hidden_reasoning_is_dropped(make_settings, auth, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    from kimi import create_app

    client = create_app(make_settings(reasoning_output="hidden")).test_client()
    body = chat(client, auth, "why?", model="kimi-thinking").get_json()
    message = body["choices"][0]["message"]
    assert "reasoning_content" not in message and "<think>" not in message["content"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0  # still counted


def test_a_required_call_that_is_missing_is_asked_for_once_in_the_same_chat(client, auth, emulator):
    script = '[[emulate: text I would rather chat. ;; call get_weather {"city": "Paris"}]]'
    body = chat(client, auth, script, tools=[WEATHER], tool_choice="required").get_json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    chats = list(emulator.state.chats().values())
    assert len(chats) == 1 and chats[0]["deleted"]


def test_a_required_call_still_missing_after_the_reminder_is_text(client, auth):
    script = "[[emulate: text No. ;; text Still no.]]"
    body = chat(client, auth, script, tools=[WEATHER], tool_choice="required").get_json()
    assert body["choices"][0]["message"]["content"] == "Still no."
    assert body["choices"][0]["finish_reason"] == "stop"
