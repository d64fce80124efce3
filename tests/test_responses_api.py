"""The real ``openai`` SDK against ``/v1/responses``, under both protocols.

What a user of ``client.responses`` sees: responses as SDK objects, streams reassembled by the
SDK's own helper (and the raw typed events in order), function-call round trips chained with
``previous_response_id`` or sent as a whole history, ``parse()`` with a pydantic model, stored
responses read and deleted, and errors as the SDK's exception classes.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests
from helpers import WEATHER_TOOL, sent_prompt, upstream_calls, wait_until
from pydantic import BaseModel

from kimi import create_app
from kimi.settings import PROTOCOLS
from kimi.tokens import split_credentials
from kimi.usage import estimate_tokens

# Thinking tests run only under web (the legacy emulator does not think).
BOTH = pytest.mark.parametrize("protocol", PROTOCOLS)

# The Responses API's flat function tool.
WEATHER = {"type": "function", **WEATHER_TOOL["function"]}
PARIS_CALL = '[[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]'
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


class City(BaseModel):
    city: str
    temp: float


@pytest.fixture
def sdk(live_server, account) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=account.refresh_token, max_retries=0, timeout=20
    )


def raw_events(live_server, account, **body) -> list[tuple[str, dict]]:
    """A streamed response as ``(event name, data)`` pairs, read without the SDK."""
    answer = requests.post(
        live_server.url + "/v1/responses",
        json={"model": "kimi", "stream": True, **body},
        headers={"Authorization": f"Bearer {account.refresh_token}"},
        timeout=20,
    )
    assert answer.status_code == 200
    events = []
    for block in answer.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def collapsed(types: list[str]) -> list[str]:
    """The event types with runs of one delta type written once."""
    return [kind for i, kind in enumerate(types) if i == 0 or kind != types[i - 1]]


@BOTH
def test_a_text_input_comes_back_as_an_sdk_response(sdk):
    response = sdk.responses.create(model="kimi", input="Hi")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "kimi"
    assert response.output_text == "Emulator reply to: Hi"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.usage.input_tokens == estimate_tokens("Hi")
    assert response.usage.output_tokens == estimate_tokens("Emulator reply to: Hi")
    assert response.usage.total_tokens == response.usage.input_tokens + (
        response.usage.output_tokens
    )


@BOTH
def test_instructions_reach_the_model_as_a_system_message(sdk, emulator, protocol):
    response = sdk.responses.create(model="kimi", instructions="Answer like a pirate.", input="hi")
    assert response.output_text == "Emulator reply to: user:hi"
    assert sent_prompt(emulator, protocol).splitlines() == [
        "system:Answer like a pirate.",
        "user:hi",
    ]
    assert response.instructions == "Answer like a pirate."


@BOTH
def test_a_message_list_with_a_developer_message_is_the_conversation_sent(sdk, emulator, protocol):
    response = sdk.responses.create(
        model="kimi",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        ],
    )
    assert response.output_text == "Emulator reply to: user:hello"
    assert sent_prompt(emulator, protocol).splitlines() == ["system:Be brief.", "user:hello"]


@BOTH
def test_the_stream_helper_reassembles_the_text(sdk):
    deltas = []
    with sdk.responses.stream(model="kimi", input="Hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == "Emulator reply to: Hi"
    assert final.status == "completed" and final.usage.output_tokens > 0


@BOTH
def test_raw_stream_events_come_in_order_with_sequence_numbers_from_zero(live_server, account):
    events = raw_events(live_server, account, input="Hi")
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    assert collapsed([name for name, _ in events]) == TEXT_EVENTS
    item_id = events[2][1]["item"]["id"]
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert {(d["item_id"], d["output_index"], d["content_index"]) for d in deltas} == {
        (item_id, 0, 0)
    }
    done = events[-1][1]["response"]
    assert done["id"] == events[0][1]["response"]["id"]
    assert done["output"][0]["content"][0]["text"] == "Emulator reply to: Hi"


@BOTH
def test_a_function_call_round_trip_chained_with_previous_response_id(sdk, emulator, protocol):
    first = sdk.responses.create(model="kimi", input=PARIS_CALL, tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id and call.id.startswith("fc_")
    second = sdk.responses.create(
        model="kimi",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}],
        tools=[WEATHER],
    )
    assert second.output_text == "It is 21 degrees in Paris."
    assert second.previous_response_id == first.id
    sent = sent_prompt(emulator, protocol)
    assert "21 C" in sent and "get_weather" in sent
    assert "[[emulate" not in sent  # only the new input went into the kept chat


@BOTH
def test_a_function_call_round_trip_sending_the_whole_history(sdk):
    first = sdk.responses.create(model="kimi", input=PARIS_CALL, tools=[WEATHER], store=False)
    call = first.output[0]
    history = [
        {"role": "user", "content": PARIS_CALL},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"},
    ]
    second = sdk.responses.create(model="kimi", input=history, tools=[WEATHER], store=False)
    assert second.output_text == "It is 21 degrees in Paris."


@BOTH
def test_a_streamed_function_call_reaches_the_sdk_as_a_call(sdk):
    with sdk.responses.stream(model="kimi", input=PARIS_CALL, tools=[WEATHER]) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}


@BOTH
def test_a_json_schema_text_format_is_parsed_into_the_model(sdk):
    response = sdk.responses.parse(
        model="kimi",
        input='Weather? [[emulate: json {"city": "Paris", "temp": 21.5}]]',
        text_format=City,
    )
    assert response.output_parsed == City(city="Paris", temp=21.5)


def test_kimi_thinking_answers_with_a_reasoning_item_first(sdk):
    response = sdk.responses.create(model="kimi-thinking", input="Hi")
    reasoning, message = response.output
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].type == "summary_text"
    assert reasoning.summary[0].text.startswith("Thinking about:")
    assert message.type == "message" and response.output_text == "Emulator reply to: Hi"
    assert response.usage.output_tokens_details.reasoning_tokens == estimate_tokens(
        reasoning.summary[0].text
    )


def test_reasoning_effort_turns_thinking_on_and_streams_a_summary(live_server, account):
    events = raw_events(live_server, account, input="Hi", reasoning={"effort": "high"})
    types = collapsed([name for name, _ in events])
    assert types[:8] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    summary = events[-1][1]["response"]["output"][0]["summary"][0]["text"]
    assert summary.startswith("Thinking about:")


@BOTH
def test_max_output_tokens_cuts_the_answer_and_marks_it_incomplete(sdk):
    response = sdk.responses.create(model="kimi", input="Hi", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert 0 < len(response.output_text) < len("Emulator reply to: Hi")
    assert response.output[0].status == "incomplete"


@BOTH
def test_a_stored_response_is_read_back_and_deleted_with_its_kimi_chat(sdk, emulator):
    created = sdk.responses.create(model="kimi", input="Hi")
    fetched = sdk.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "Emulator reply to: Hi"
    [chat] = emulator.state.chats().values()
    assert not chat["deleted"]  # kept for previous_response_id
    sdk.responses.delete(created.id)
    assert wait_until(lambda: all(c["deleted"] for c in emulator.state.chats().values()))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


def test_a_streamed_response_is_stored_and_continued(sdk, emulator):
    with sdk.responses.stream(model="kimi", input="keep 7") as stream:
        first = stream.get_final_response()
    assert sdk.responses.retrieve(first.id).output_text == first.output_text
    second = sdk.responses.create(model="kimi", input="and?", previous_response_id=first.id)
    assert second.output_text == "Emulator reply to: and?"
    assert len(emulator.state.chats()) == 1  # the same Kimi chat, continued


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_another_api_key_can_neither_read_nor_continue_a_stored_response(
    make_settings, account, emulator
):
    settings = make_settings(
        kimi_tokens=tuple(split_credentials(account.refresh_token)), api_keys=("alpha", "beta")
    )
    client = create_app(settings).test_client()
    alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
    created = client.post("/v1/responses", json={"input": "Hi"}, headers=alpha).get_json()
    calls = len(emulator.state.calls())
    assert client.get(f"/v1/responses/{created['id']}", headers=beta).status_code == 404
    assert client.delete(f"/v1/responses/{created['id']}", headers=beta).status_code == 404
    body = {"input": "and?", "previous_response_id": created["id"]}
    stolen = client.post("/v1/responses", json=body, headers=beta)
    assert stolen.status_code == 404
    assert stolen.get_json()["error"]["param"] == "previous_response_id"
    assert len(emulator.state.calls()) == calls  # nothing of it reached Kimi
    assert client.get(f"/v1/responses/{created['id']}", headers=alpha).status_code == 200


@BOTH
def test_store_false_is_a_one_shot_chat_that_cannot_be_read_back(sdk, emulator):
    created = sdk.responses.create(model="kimi", input="Hi", store=False)
    assert created.output_text == "Emulator reply to: Hi"
    assert wait_until(lambda: all(c["deleted"] for c in emulator.state.chats().values()))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


@BOTH
def test_an_unknown_previous_response_id_is_a_404_before_kimi_is_asked(sdk, emulator):
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.create(model="kimi", input="Hi", previous_response_id="resp_nothing")
    assert info.value.body["param"] == "previous_response_id"
    assert upstream_calls(emulator, "Chat") == [] and upstream_calls(emulator, "completion") == []


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"background": True}, "background"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_a_request_that_cannot_be_honoured_is_a_400_naming_its_field(sdk, fields, param):
    body = {"model": "kimi", "input": "Hi", **fields}
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(**body)
    assert info.value.body["param"] == param
    assert info.value.body["message"]


def test_harmless_fields_are_accepted_and_ignored(sdk):
    response = sdk.responses.create(
        model="kimi",
        input="Hi",
        temperature=0.2,
        top_p=0.9,
        metadata={"run": "1"},
        user="someone",
        truncation="auto",
    )
    assert response.output_text == "Emulator reply to: Hi"
    assert response.metadata == {"run": "1"}


@pytest.mark.parametrize(
    "protocol, fault",
    # The legacy adapter reads Kimi's in-stream error as a stop (it keeps the text before it),
    # so only a cut breaks a legacy stream.
    [("web", "cut"), ("web", "stream_error"), ("legacy", "cut")],
)
def test_a_stream_broken_after_its_start_ends_with_response_failed(
    live_server, account, emulator, fault
):
    emulator.state.add_fault(fault)
    events = raw_events(live_server, account, input="Hi")
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.failed" and "response.completed" not in names
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert failed["output"][0]["status"] == "incomplete"  # the text it got, marked cut off
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))


def test_the_sdk_stream_helper_sees_the_failure(sdk, emulator):
    emulator.state.add_fault("cut")
    with sdk.responses.stream(model="kimi", input="Hi") as stream:
        types = [event.type for event in stream]
    assert types[-1] == "response.failed"
