"""Every front door's files reach Kimi's upload flow under the web protocol, through the real
SDKs: /v1/chat/completions (image_url as a URL and as data:, file_url, file.file_data),
/v1/responses (input_image, input_file as a URL, a data: URL, plain base64) and /v1/messages
(image and document blocks, base64 and url sources). Each file arrives whole with its type, and
the reply shows Kimi read it; a failed or slow parse is each SDK's error naming the file. Search
sources come out the same way through every door."""

from __future__ import annotations

import base64
import hashlib

import anthropic
import openai
import pytest
from flask import Flask, Response
from helpers import LiveServer
from test_web_sources_e2e import CITED, SOURCES

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.4\n% a scanned page\n" + bytes(range(256)) * 4
PDF_TYPE = "application/pdf"
SILENT = "Emulator reply to: hi According to the web it is sunny and mild."


@pytest.fixture(scope="module")
def source_url():
    files = Flask("front-door-sources")
    files.add_url_rule("/cat.png", "png", lambda: Response(PNG, mimetype="image/png"))
    files.add_url_rule("/scan.pdf", "pdf", lambda: Response(PDF, mimetype=PDF_TYPE))
    with LiveServer(files) as server:
        yield server.url


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_private_file_urls=True, file_parse_timeout=0.5)


@pytest.fixture(autouse=True)
def quick_parse(emulator):
    emulator.state.configure(parse_seconds=0.0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_note(name: str, data: bytes) -> str:
    return f"{name} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]})"


def uploaded(emulator) -> tuple[str, str, str]:
    (record,) = emulator.state.web_files.snapshot()
    return record["name"], record["content_type"], record["sha256"]


# (id, content part, file name Kimi sees, bytes, type)
CHAT_PARTS = [
    ("image-url", lambda u: {"type": "image_url", "image_url": {"url": u + "/cat.png"}}, "cat.png"),
    (
        "image-data-url",
        lambda u: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
        "image.png",
    ),
    ("file-url", lambda u: {"type": "file", "file_url": {"url": u + "/scan.pdf"}}, "scan.pdf"),
    (
        "file-data",
        lambda u: {
            "type": "file",
            "file": {"file_data": f"data:{PDF_TYPE};base64,{b64(PDF)}", "filename": "scan.pdf"},
        },
        "scan.pdf",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("part, name", [c[1:] for c in CHAT_PARTS], ids=[c[0] for c in CHAT_PARTS])
def test_chat_completions_files_are_read_by_kimi(oai, emulator, source_url, part, name, stream):
    data, media_type = (PNG, "image/png") if name.endswith(".png") else (PDF, PDF_TYPE)
    content = [{"type": "text", "text": "What is in it?"}, part(source_url)]
    messages = [{"role": "user", "content": content}]
    if stream:
        chunks = oai.chat.completions.create(model="kimi", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = oai.chat.completions.create(model="kimi", messages=messages)
        text = completion.choices[0].message.content
    assert text.endswith(f"[files: {read_note(name, data)}]")
    assert uploaded(emulator) == (name, media_type, hashlib.sha256(data).hexdigest())


RESPONSES_PARTS = [
    ("input-image-url", lambda u: {"type": "input_image", "image_url": u + "/cat.png"}, "cat.png"),
    (
        "input-image-data-url",
        lambda u: {"type": "input_image", "image_url": f"data:image/png;base64,{b64(PNG)}"},
        "image.png",
    ),
    ("input-file-url", lambda u: {"type": "input_file", "file_url": u + "/scan.pdf"}, "scan.pdf"),
    (
        "input-file-data-url",
        lambda u: {
            "type": "input_file",
            "filename": "scan.pdf",
            "file_data": f"data:{PDF_TYPE};base64,{b64(PDF)}",
        },
        "scan.pdf",
    ),
    (
        # Plain base64, as OpenAI's Responses docs show it: the name says what it is.
        "input-file-plain-base64",
        lambda u: {"type": "input_file", "filename": "scan.pdf", "file_data": b64(PDF)},
        "scan.pdf",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "part, name", [c[1:] for c in RESPONSES_PARTS], ids=[c[0] for c in RESPONSES_PARTS]
)
def test_responses_files_are_read_by_kimi(oai, emulator, source_url, part, name, stream):
    data, media_type = (PNG, "image/png") if name.endswith(".png") else (PDF, PDF_TYPE)
    content = [{"type": "input_text", "text": "What is in it?"}, part(source_url)]
    request = {"model": "kimi", "store": False, "input": [{"role": "user", "content": content}]}
    if stream:
        with oai.responses.stream(**request) as events:
            response = events.get_final_response()
    else:
        response = oai.responses.create(**request)
    assert response.output_text.endswith(f"[files: {read_note(name, data)}]")
    assert uploaded(emulator) == (name, media_type, hashlib.sha256(data).hexdigest())


ANTHROPIC_BLOCKS = [
    (
        "image-base64",
        lambda u: {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
        },
        "image.png",
    ),
    (
        "image-url",
        lambda u: {"type": "image", "source": {"type": "url", "url": u + "/cat.png"}},
        "cat.png",
    ),
    (
        "document-base64",
        lambda u: {
            "type": "document",
            "title": "scan.pdf",
            "source": {"type": "base64", "media_type": PDF_TYPE, "data": b64(PDF)},
        },
        "scan.pdf",
    ),
    (
        "document-url",
        lambda u: {"type": "document", "source": {"type": "url", "url": u + "/scan.pdf"}},
        "scan.pdf",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "block, name", [c[1:] for c in ANTHROPIC_BLOCKS], ids=[c[0] for c in ANTHROPIC_BLOCKS]
)
def test_anthropic_blocks_are_read_by_kimi(claude, emulator, source_url, block, name, stream):
    data, media_type = (PNG, "image/png") if name.endswith(".png") else (PDF, PDF_TYPE)
    content = [block(source_url), {"type": "text", "text": "What is in it?"}]
    request = {
        "model": "claude-sonnet-4",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": content}],
    }
    if stream:
        with claude.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**request)
    assert message.content[0].text.endswith(f"[files: {read_note(name, data)}]")
    assert uploaded(emulator) == (name, media_type, hashlib.sha256(data).hexdigest())


# --- parse failures through each door --------------------------------------------------------


def pdf_to_chat(oai):
    part = {"type": "file", "file": {"file_data": f"data:{PDF_TYPE};base64,{b64(PDF)}"}}
    part["file"]["filename"] = "scan.pdf"
    content = [{"type": "text", "text": "Read it"}, part]
    return oai.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": content}]
    )


def pdf_to_responses(oai):
    part = {"type": "input_file", "filename": "scan.pdf", "file_data": b64(PDF)}
    content = [{"type": "input_text", "text": "Read it"}, part]
    return oai.responses.create(model="kimi", input=[{"role": "user", "content": content}])


def pdf_to_messages(claude):
    source = {"type": "base64", "media_type": PDF_TYPE, "data": b64(PDF)}
    content = [
        {"type": "document", "title": "scan.pdf", "source": source},
        {"type": "text", "text": "Read it"},
    ]
    return claude.messages.create(
        model="claude-sonnet-4", max_tokens=100, messages=[{"role": "user", "content": content}]
    )


@pytest.mark.parametrize(
    "fault, status", [("parse_failed", 502), ("parse_slow", 504)], ids=["failed", "too-slow"]
)
@pytest.mark.parametrize("door", ["chat", "responses", "messages"])
def test_a_parse_that_fails_or_times_out_is_each_sdks_error_naming_the_file(
    oai, claude, emulator, door, fault, status
):
    emulator.state.add_fault(fault, seconds=30)
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as caught:
        if door == "messages":
            pdf_to_messages(claude)
        else:
            (pdf_to_chat if door == "chat" else pdf_to_responses)(oai)
    assert caught.value.status_code == status
    assert "scan.pdf" in caught.value.message
    assert [c for c in emulator.state.calls() if "ChatService/Chat" in c["path"]] == []


# --- search sources through each door -------------------------------------------------------

SEARCH_MODELS = [("kimi-search", CITED + SOURCES), ("kimi-search-silent", SILENT)]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model, expected", SEARCH_MODELS)
def test_responses_search_answers_carry_the_references_and_sources(oai, model, expected, stream):
    if stream:
        with oai.responses.stream(model=model, input="hi", store=False) as events:
            text = events.get_final_response().output_text
    else:
        text = oai.responses.create(model=model, input="hi", store=False).output_text
    assert text == expected


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model, expected", SEARCH_MODELS)
def test_messages_search_answers_carry_the_references_and_sources(claude, model, expected, stream):
    request = {"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with claude.messages.stream(**request) as events:
            text = events.get_final_text()
    else:
        text = claude.messages.create(**request).content[0].text
    assert text == expected


# --- every file of the latest turn ---------------------------------------------------------


def test_screenshots_in_several_tool_results_all_reach_kimi(claude, emulator):
    """Claude Code's way: parallel tool calls, each result an image, then a question."""
    shots = [PNG, PNG[::-1]]
    calls = [{"type": "tool_use", "id": f"t{n}", "name": "screenshot", "input": {}} for n in (1, 2)]
    results = [
        {
            "type": "tool_result",
            "tool_use_id": f"t{n}",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": b64(shot)},
                }
            ],
        }
        for n, shot in enumerate(shots, 1)
    ]
    tool = {"name": "screenshot", "description": "Take one", "input_schema": {"type": "object"}}
    message = claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=200,
        tools=[tool],
        messages=[
            {"role": "user", "content": "Take two screenshots"},
            {"role": "assistant", "content": calls},
            {"role": "user", "content": [*results, {"type": "text", "text": "Compare them"}]},
        ],
    )
    notes = ", ".join(read_note("image.png", shot) for shot in shots)
    assert message.content[0].text.endswith(f"[files: {notes}]")
    digests = [record["sha256"] for record in emulator.state.web_files.snapshot()]
    assert digests == [hashlib.sha256(shot).hexdigest() for shot in shots]


def test_files_of_consecutive_user_messages_all_reach_kimi(oai, emulator):
    def picture(data: bytes) -> dict:
        return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(data)}"}}

    messages = [
        {"role": "user", "content": "Earlier"},
        {"role": "assistant", "content": "Yes?"},
        {"role": "user", "content": [{"type": "text", "text": "This one"}, picture(PNG)]},
        {"role": "user", "content": [{"type": "text", "text": "and this one"}, picture(PNG[::-1])]},
    ]
    text = oai.chat.completions.create(model="kimi", messages=messages).choices[0].message.content
    assert text.endswith(
        f"[files: {read_note('image.png', PNG)}, {read_note('image.png', PNG[::-1])}]"
    )
