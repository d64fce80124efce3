"""Documents sent in messages (web protocol, WEB_FILE_MODE=extract): fetched safely, read
locally, put in the prompt."""

from __future__ import annotations

import base64
import functools
import io
import threading
import zipfile

import pytest
from flask import Flask, Response, redirect
from helpers import chat, sent_prompt, upstream_calls
from text_samples import ENCODED, TRADITIONAL_CHINESE
from werkzeug.serving import make_server

from kimi import create_app

NOTES = "Quarterly notes: revenue grew 12 percent."
DOCX_XML = (
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>合同第一条：付款期限三十天。</w:t></w:r></w:p></w:body></w:document>"
)

# Too short to tell Big5 from GB18030 or EUC-KR by its bytes: only the declared charset says.
MINUTES = "會議記錄：下週一開會"


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", DOCX_XML)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def file_server():
    files = Flask("files")
    files.add_url_rule("/notes.txt", "notes", lambda: Response(NOTES, mimetype="text/plain"))
    files.add_url_rule(
        "/page.html",
        "page",
        lambda: Response(
            "<html><script>x()</script><p>Hello page</p></html>", mimetype="text/html"
        ),
    )
    files.add_url_rule(
        "/contract.docx",
        "docx",
        lambda: Response(
            docx_bytes(),
            mimetype="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    )
    files.add_url_rule(
        "/minutes.txt",
        "minutes",
        lambda: Response(MINUTES.encode("big5"), content_type="text/plain; charset=big5"),
    )
    files.add_url_rule("/missing.pdf", "missing", lambda: Response("no", status=404))
    files.add_url_rule("/hop", "hop", lambda: redirect("/notes.txt"))
    server = make_server("127.0.0.1", 0, files, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def make_settings(make_settings):
    """These tests are about reading documents here: WEB_FILE_MODE=extract."""
    return functools.partial(make_settings, web_file_mode="extract")


@pytest.fixture
def doc_client(make_settings):
    return create_app(make_settings(allow_private_file_urls=True)).test_client()


def ask(client, auth, *parts, text="What does it say?"):
    content = [{"type": "text", "text": text}, *parts]
    return chat(client, auth, messages=[{"role": "user", "content": content}])


@pytest.mark.parametrize(
    "make_part",
    [
        lambda url: {"type": "file", "file_url": {"url": url + "/notes.txt"}},
        lambda url: {
            "type": "file",
            "file": {
                "file_data": "data:text/plain;base64," + base64.b64encode(NOTES.encode()).decode(),
                "filename": "notes.txt",
            },
        },
    ],
    ids=["file_url", "file_data"],
)
def test_a_document_reaches_kimi_as_named_delimited_text(
    doc_client, auth, emulator, file_server, make_part
):
    response = ask(doc_client, auth, make_part(file_server))
    assert response.status_code == 200, response.get_json()
    prompt = sent_prompt(emulator, "web")
    assert '<document name="notes.txt"' in prompt
    assert NOTES in prompt
    assert prompt.rstrip().endswith("What does it say?\n[file: notes.txt]")


def test_docx_and_html_are_read_as_text(doc_client, auth, emulator, file_server):
    parts = [
        {"type": "file", "file_url": {"url": file_server + "/contract.docx"}},
        {"type": "file", "file_url": {"url": file_server + "/page.html"}},
    ]
    assert ask(doc_client, auth, *parts).status_code == 200
    prompt = sent_prompt(emulator, "web")
    assert "合同第一条：付款期限三十天。" in prompt
    assert "Hello page" in prompt and "x()" not in prompt


def test_a_redirect_to_a_document_is_followed(doc_client, auth, emulator, file_server):
    assert (
        ask(
            doc_client, auth, {"type": "file", "file_url": {"url": file_server + "/hop"}}
        ).status_code
        == 200
    )
    assert NOTES in sent_prompt(emulator, "web")


@pytest.mark.parametrize(
    "part_for",
    [
        lambda url: {"type": "file", "file_url": {"url": url + "/missing.pdf"}},
        lambda url: {"type": "file", "file_url": {"url": "http://127.0.0.1:9/nothing.txt"}},
        lambda url: {"type": "file", "file": {"file_data": "data:text/plain;base64,@@@"}},
        lambda url: {"type": "file", "file": {"file_data": "data:image/x-unknown;base64,AAAA"}},
        lambda url: {"type": "image_url", "image_url": {"url": url + "/cat.png"}},
    ],
    ids=["source-404", "unreachable", "bad-base64", "unknown-type", "image-under-web"],
)
def test_bad_files_are_a_400_and_nothing_reaches_the_chat(
    doc_client, auth, emulator, file_server, part_for
):
    response = ask(doc_client, auth, part_for(file_server))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["message"]
    assert upstream_calls(emulator, "ChatService/Chat") == []


def test_private_addresses_are_refused_by_default(make_settings, auth, emulator, file_server):
    client = create_app(make_settings()).test_client()
    response = ask(client, auth, {"type": "file", "file_url": {"url": file_server + "/notes.txt"}})
    assert response.status_code == 400
    assert "not allowed" in response.get_json()["error"]["message"]
    assert upstream_calls(emulator, "ChatService/Chat") == []


def test_a_file_over_the_size_cap_is_a_400(make_settings, auth, emulator):
    client = create_app(make_settings(max_file_mb=0.001)).test_client()
    data = base64.b64encode(b"x" * 5000).decode()
    part = {"type": "file", "file": {"file_data": f"data:text/plain;base64,{data}"}}
    response = ask(client, auth, part)
    assert response.status_code == 400
    assert upstream_calls(emulator, "ChatService/Chat") == []


def test_a_document_over_the_text_cap_is_a_400(make_settings, auth, emulator):
    client = create_app(make_settings(max_document_chars=10)).test_client()
    data = base64.b64encode(NOTES.encode()).decode()
    part = {"type": "file", "file": {"file_data": f"data:text/plain;base64,{data}"}}
    response = ask(client, auth, part)
    assert response.status_code == 400
    assert "10" in response.get_json()["error"]["message"]


def data_url_part(data: bytes, filename: str, media_type: str = "text/plain") -> dict:
    payload = base64.b64encode(data).decode()
    return {
        "type": "file",
        "file": {"file_data": f"data:{media_type};base64,{payload}", "filename": filename},
    }


@pytest.mark.parametrize("encoding", ENCODED)
def test_a_text_document_in_a_legacy_encoding_reaches_kimi_as_written(
    doc_client, auth, emulator, encoding
):
    part = data_url_part(ENCODED[encoding].encode(encoding), "notes.txt")

    response = ask(doc_client, auth, part)

    assert response.status_code == 200, response.get_json()
    assert f'<document name="notes.txt" type="text">\n{ENCODED[encoding]}' in sent_prompt(
        emulator, "web"
    )


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16"], ids=["utf-8", "utf-8-bom", "utf-16-bom"]
)
def test_a_unicode_text_document_reaches_kimi_as_written(doc_client, auth, emulator, encoding):
    text = "".join(ENCODED.values())

    response = ask(doc_client, auth, data_url_part(text.encode(encoding), "notes.txt"))

    assert response.status_code == 200, response.get_json()
    assert text in sent_prompt(emulator, "web")


def test_an_html_page_in_big5_reaches_kimi_as_written(doc_client, auth, emulator):
    page = f"<html><body><h1>會議</h1><p>{TRADITIONAL_CHINESE}</p></body></html>"

    response = ask(doc_client, auth, data_url_part(page.encode("big5"), "page.html", "text/html"))

    assert response.status_code == 200, response.get_json()
    assert f"會議\n{TRADITIONAL_CHINESE.strip()}" in sent_prompt(emulator, "web")


def test_the_charset_of_a_data_url_decides_the_decoding(doc_client, auth, emulator):
    part = data_url_part(MINUTES.encode("big5"), "minutes.txt", "text/plain;charset=big5")

    assert ask(doc_client, auth, part).status_code == 200
    assert MINUTES in sent_prompt(emulator, "web")


def test_the_charset_a_server_declares_decides_the_decoding(
    doc_client, auth, emulator, file_server
):
    part = {"type": "file", "file_url": {"url": file_server + "/minutes.txt"}}

    assert ask(doc_client, auth, part).status_code == 200
    assert MINUTES in sent_prompt(emulator, "web")


def test_a_wrong_charset_in_a_data_url_is_overruled_by_the_bytes(doc_client, auth, emulator):
    data = TRADITIONAL_CHINESE.encode("big5")
    part = data_url_part(data, "notes.txt", "text/plain;charset=utf-8")

    assert ask(doc_client, auth, part).status_code == 200
    assert TRADITIONAL_CHINESE in sent_prompt(emulator, "web")
