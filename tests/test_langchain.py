"""LangChain's ``ChatOpenAI`` pointed at the service: chat, tools, structured output, reasoning.

Nothing here may reach the internet: tiktoken downloads its encodings on first use, which only
token counting (``get_num_tokens*``) triggers, so these tests never count tokens and a guard
turns any download attempt into a failure.
"""

from __future__ import annotations

import json

import pytest
import tiktoken.load
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from kimi.settings import PROTOCOLS

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

PARIS_CALL = '[[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]'


class City(BaseModel):
    """A city and its temperature."""

    city: str
    temp: float


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return json.dumps({"city": city, "temp": 21})


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail, instead of hanging or passing by luck, if anything tries to leave the machine."""

    def refuse(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_model(live_server, account):
    def make(model: str = "kimi", **options) -> ChatOpenAI:
        return ChatOpenAI(
            base_url=live_server.url + "/v1",
            api_key=account.refresh_token,
            model=model,
            max_retries=0,
            timeout=20,
            **options,
        )

    return make


def test_invoke_returns_the_answer_as_an_ai_message(make_model):
    message = make_model().invoke("hi")
    assert isinstance(message, AIMessage)
    assert message.content == "Emulator reply to: hi"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["total_tokens"] > 0


def test_stream_yields_the_answer_in_chunks(make_model):
    chunks = list(make_model().stream("hi"))
    assert len(chunks) > 1
    assert "".join(chunk.content for chunk in chunks) == "Emulator reply to: hi"


def test_bind_tools_round_trip_reaches_the_final_answer(make_model):
    model = make_model().bind_tools([get_weather])
    messages = [HumanMessage(f"Weather in Paris? {PARIS_CALL}")]
    first = model.invoke(messages)
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert call["id"]

    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = model.invoke(messages)
    assert final.tool_calls == []
    assert final.content == "It is 21 degrees in Paris."


def test_a_tool_call_invokes_the_langchain_tool(make_model):
    first = make_model().bind_tools([get_weather]).invoke(PARIS_CALL)
    result = get_weather.invoke(first.tool_calls[0])
    assert isinstance(result, ToolMessage)
    assert json.loads(result.content) == {"city": "Paris", "temp": 21}
    assert result.tool_call_id == first.tool_calls[0]["id"]


def test_streamed_tool_call_chunks_add_up_to_the_call(make_model):
    script = '[[emulate: call get_weather {"city": "Paris"} ++ call get_weather {"city": "Rome"}]]'
    chunks = list(make_model().bind_tools([get_weather]).stream(script))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]


def test_structured_output_through_function_calling_returns_the_model(make_model):
    structured = make_model().with_structured_output(City, method="function_calling")
    result = structured.invoke('Paris now? [[emulate: call City {"city": "Paris", "temp": 21}]]')
    assert result == City(city="Paris", temp=21)


def test_structured_output_through_json_schema_returns_the_model(make_model):
    structured = make_model().with_structured_output(City, method="json_schema")
    result = structured.invoke('Paris now? [[emulate: json {"city": "Paris", "temp": 21}]]')
    assert result == City(city="Paris", temp=21)


def test_structured_output_with_include_raw_keeps_the_message(make_model):
    structured = make_model().with_structured_output(City, method="json_schema", include_raw=True)
    result = structured.invoke('[[emulate: fenced-json {"city": "Rome", "temp": 25}]]')
    assert result["parsed"] == City(city="Rome", temp=25)
    assert result["parsing_error"] is None
    assert json.loads(result["raw"].content) == {"city": "Rome", "temp": 25}


def test_think_tags_show_the_reasoning_in_the_content(make_model, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    message = make_model("kimi-think-tags").invoke("why?")
    assert message.content.startswith("<think>Thinking about: why?</think>")
    assert message.content.endswith("Emulator reply to: why?")


def test_think_tags_stream_the_reasoning_first(make_model, protocol):
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    text = "".join(chunk.content for chunk in make_model("kimi-think-tags").stream("why?"))
    assert text.startswith("<think>Thinking about: why?</think>")
    assert text.endswith("Emulator reply to: why?")


def test_chat_openai_drops_reasoning_content_so_think_tags_are_the_way(make_model, protocol):
    # ChatOpenAI keeps only standard OpenAI fields; the README tells LangChain users to pick a
    # -think-tags model. If a LangChain release starts keeping it, this fails and the README
    # table wants updating.
    if protocol == "legacy":
        pytest.skip("the 2024 backend sends no thinking")
    message = make_model("kimi-thinking").invoke("why?")
    assert message.content == "Emulator reply to: why?"
    assert "Thinking about" not in json.dumps(message.additional_kwargs)
