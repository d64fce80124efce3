"""Files under the legacy protocol: streamed through the upload flow, cited in the completion."""

from __future__ import annotations

import base64
import hashlib

import pytest
from flask import Flask, Response
from helpers import LiveServer, chat, upstream_calls, wait_until

from kimi import create_app

PDF_BYTES = b"%PDF-1.4 pretend document " + bytes(range(256)) * 40
BIG = 12 * 1024 * 1024  # larger than the in-memory spool, so unknown lengths spool to disk


def big_chunks():
    block = bytes(range(256)) * 4096
    for _ in range(BIG // len(block)):
        yield block


@pytest.fixture
def protocol() -> str:
    return "legacy"


@pytest.fixture(scope="module")
def source_server():
    files = Flask("sources")
    files.add_url_rule(
        "/report.pdf", "pdf", lambda: Response(PDF_BYTES, mimetype="application/pdf")
    )
    files.add_url_rule(
        "/big.bin",
        "big",
        lambda: Response(
            big_chunks(), mimetype="application/pdf", headers={"Content-Length": str(BIG)}
        ),
    )
    files.add_url_rule(
        "/big-unknown.bin",
        "big_unknown",
        lambda: Response(big_chunks(), mimetype="application/pdf"),
    )
    with LiveServer(files) as server:
        yield server.url


@pytest.fixture
def upload_client(make_settings):
    return create_app(make_settings(allow_private_file_urls=True)).test_client()


def ask(client, auth, *parts, stream=False):
    content = [{"type": "text", "text": "What is in it?"}, *parts]
    return chat(client, auth, messages=[{"role": "user", "content": content}], stream=stream)


def file_part(url: str) -> dict:
    return {"type": "file", "file_url": {"url": url}}


def big_digest() -> str:
    digest = hashlib.sha256()
    for chunk in big_chunks():
        digest.update(chunk)
    return digest.hexdigest()


def test_a_document_is_uploaded_registered_parsed_and_cited(
    upload_client, auth, emulator, source_server
):
    response = ask(upload_client, auth, file_part(source_server + "/report.pdf"))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()["choices"][0]["message"]["content"]
    assert answer == "Emulator reply to: What is in it? [files: report.pdf]"
    (upload,) = emulator.state.uploads()
    assert upload["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    assert upload["size"] == len(PDF_BYTES)
    assert upload["action"] == "file"
    completion = upstream_calls(emulator, "/completion/stream")[-1]["body"]
    assert len(completion["refs"]) == 1
    assert completion["refs_file"][0]["id"] == completion["refs"][0]


def test_an_image_goes_through_the_image_action(upload_client, auth, emulator):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    data = "data:image/png;base64," + base64.b64encode(png).decode()
    part = {"type": "image_url", "image_url": {"url": data}}
    response = ask(upload_client, auth, part)
    assert response.status_code == 200, response.get_json()
    (upload,) = emulator.state.uploads()
    assert upload["action"] == "image"
    assert upload["sha256"] == hashlib.sha256(png).hexdigest()


@pytest.mark.parametrize("path", ["/big.bin", "/big-unknown.bin"])
def test_a_large_file_streams_through_with_its_bytes_intact(
    upload_client, auth, emulator, source_server, path
):
    response = ask(upload_client, auth, file_part(source_server + path))
    assert response.status_code == 200, response.get_json()
    (upload,) = emulator.state.uploads()
    assert upload["size"] == BIG
    assert upload["sha256"] == big_digest()
    # Sent with a Content-Length: known from the source, or from the spool when it was not.
    assert upload["chunked"] is False
    assert upload["content_length"] == str(BIG)


def test_a_large_data_url_is_uploaded_with_its_bytes_intact(make_settings, auth, emulator):
    client = create_app(make_settings(max_request_mb=32)).test_client()
    payload = base64.b64encode(b"".join(big_chunks())).decode()
    part = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{payload}"}}
    response = ask(client, auth, part)
    assert response.status_code == 200, response.get_json()
    (upload,) = emulator.state.uploads()
    assert (upload["size"], upload["sha256"]) == (BIG, big_digest())
    assert upload["content_length"] == str(BIG)


def test_files_of_the_latest_message_only_are_uploaded(
    upload_client, auth, emulator, source_server
):
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "read"}, file_part(source_server + "/report.pdf")],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    assert chat(upload_client, auth, messages=messages).status_code == 200
    assert emulator.state.uploads() == []
    prompt = upstream_calls(emulator, "/completion/stream")[-1]["body"]["messages"][0]["content"]
    assert "[file: report.pdf]" in prompt


def test_a_parse_that_never_finishes_is_a_504(make_settings, auth, emulator, source_server):
    client = create_app(
        make_settings(allow_private_file_urls=True, file_parse_timeout=1.2)
    ).test_client()
    emulator.state.add_fault("parse_never")
    response = ask(client, auth, file_part(source_server + "/report.pdf"))
    assert response.status_code == 504
    assert "report.pdf" in response.get_json()["error"]["message"]
    assert upstream_calls(emulator, "/completion/stream") == []
    assert wait_until(lambda: all(c["deleted"] for c in emulator.state.chats().values()))


def test_a_refused_upload_is_an_error_and_the_chat_is_cleaned_up(
    upload_client, auth, emulator, source_server
):
    emulator.state.add_fault("upload_forbidden")
    response = ask(upload_client, auth, file_part(source_server + "/report.pdf"))
    assert response.status_code == 502
    assert "report.pdf" in response.get_json()["error"]["message"]
    assert upstream_calls(emulator, "/completion/stream") == []
    assert wait_until(lambda: all(c["deleted"] for c in emulator.state.chats().values()))


@pytest.mark.parametrize(
    "path, status, code",
    [("/api/pre-sign-url", 404, "not_found"), ("/api/file", 403, "chat.forbidden")],
    ids=["presign-route-gone", "register-forbidden"],
)
def test_a_refused_file_call_is_a_502_naming_the_file_not_an_unknown_conversation(
    kimi_refusing, auth, emulator, source_server, path, status, code
):
    client = kimi_refusing(path, status, code, "kimi says no", allow_private_file_urls=True)
    response = ask(client, auth, file_part(source_server + "/report.pdf"))
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "file_upload_failed" and error["param"] is None
    assert "report.pdf" in error["message"] and "kimi says no" in error["message"]
    assert upstream_calls(emulator, "/completion/stream") == []


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file_url": {"url": "http://127.0.0.1:9/missing.pdf"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,@@"}},
    ],
    ids=["unreachable", "bad-base64"],
)
def test_a_bad_file_is_a_400_before_any_chat_exists(upload_client, auth, emulator, part):
    response = ask(upload_client, auth, part)
    assert response.status_code == 400
    assert emulator.state.chats() == {}
    assert emulator.state.uploads() == []


def test_private_addresses_are_refused_under_legacy_too(
    make_settings, auth, emulator, source_server
):
    client = create_app(make_settings()).test_client()
    response = ask(client, auth, file_part(source_server + "/report.pdf"))
    assert response.status_code == 400
    assert emulator.state.chats() == {}


def test_the_upload_never_carries_the_kimi_token(upload_client, auth, emulator, source_server):
    ask(upload_client, auth, file_part(source_server + "/report.pdf"))
    puts = [c for c in emulator.state.calls() if c["method"] == "PUT"]
    assert puts and not any(c["auth"] for c in puts)


def test_a_reader_of_known_length_is_sent_with_content_length_not_chunked():
    import requests

    from kimi.files.sources import ChunkReader

    reader = ChunkReader(iter([b"abc", b"de"]), 5)
    prepared = requests.Request("PUT", "http://127.0.0.1:9/u", data=reader).prepare()
    assert prepared.headers["Content-Length"] == "5"
    assert "Transfer-Encoding" not in prepared.headers
    assert reader.read() == b"abcde"


def test_the_openai_file_data_shape_is_uploaded_with_its_filename(upload_client, auth, emulator):
    data = "data:application/pdf;base64," + base64.b64encode(PDF_BYTES).decode()
    part = {"type": "file", "file": {"file_data": data, "filename": "brief.pdf"}}
    response = ask(upload_client, auth, part)
    assert response.status_code == 200, response.get_json()
    (upload,) = emulator.state.uploads()
    assert upload["name"] == "brief.pdf"
    assert upload["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()


@pytest.mark.parametrize(
    "data_type", ["application/octet-stream", "image/x-unknown", "application/x-msdownload"]
)
def test_an_unknown_data_url_type_is_a_400(upload_client, auth, emulator, data_type):
    part = {"type": "file", "file": {"file_data": f"data:{data_type};base64,AAAA"}}
    response = ask(upload_client, auth, part)
    assert response.status_code == 400
    assert data_type in response.get_json()["error"]["message"]
    assert emulator.state.chats() == {}


def test_a_file_over_max_file_mb_is_a_400_before_any_chat(
    make_settings, auth, emulator, source_server
):
    settings = make_settings(allow_private_file_urls=True, max_file_mb=1)
    response = ask(create_app(settings).test_client(), auth, file_part(source_server + "/big.bin"))
    assert response.status_code == 400
    assert emulator.state.chats() == {}
    assert emulator.state.uploads() == []


def test_too_many_files_in_one_message_is_a_400(make_settings, auth, emulator, source_server):
    settings = make_settings(allow_private_file_urls=True, max_files_per_message=2)
    parts = [file_part(source_server + "/report.pdf")] * 3
    response = ask(create_app(settings).test_client(), auth, *parts)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "too_many_files"
    assert emulator.state.calls() == []
