"""Files and images under the web protocol (WEB_FILE_MODE=upload, the default): uploaded to Kimi,
parsed there, referred to by file blocks in the Chat call, and read by Kimi itself."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile

import pytest
from flask import Flask, Response
from helpers import LiveServer, chat, pdf_file, sse_events, streamed_text, upstream_calls

from kimi import create_app

CHAT = "ChatService/Chat"
UPLOAD = "/apiv2-files/file/upload"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
BIG = 12 * 1024 * 1024  # larger than the in-memory spool


def scanned_pdf() -> bytes:
    """One page that is only a picture: no text layer for a local reader to find."""
    drawing = b"q 612 0 0 792 0 0 cm /Im0 Do Q"
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Length 1 >>\nstream\n\x80\nendstream",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(drawing), drawing),
        ]
    )


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(
            "word/document.xml",
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            "<w:body><w:p><w:r><w:t>Terms: pay in 30 days.</w:t></w:r></w:p></w:body></w:document>",
        )
    return buffer.getvalue()


SCAN, DOCX = scanned_pdf(), docx_bytes()


def big_chunks():
    block = bytes(range(256)) * 4096
    for _ in range(BIG // len(block)):
        yield block


@pytest.fixture(scope="module")
def source_server():
    files = Flask("sources")
    routes = {
        "/cat.png": (PNG, "image/png"),
        "/scan.pdf": (SCAN, "application/pdf"),
        "/contract.docx": (DOCX, DOCX_TYPE),
    }
    for path, (data, mimetype) in routes.items():
        files.add_url_rule(
            path, path, lambda data=data, mimetype=mimetype: Response(data, mimetype=mimetype)
        )
    files.add_url_rule(
        "/big.pdf", "big", lambda: Response(big_chunks(), mimetype="application/pdf")
    )
    with LiveServer(files) as server:
        yield server.url


@pytest.fixture(autouse=True)
def quick_parse(emulator):
    """Files parse at once unless a test says otherwise (its own test of polling)."""
    emulator.state.configure(parse_seconds=0.0)


@pytest.fixture
def files_client(make_settings):
    return create_app(make_settings(allow_private_file_urls=True)).test_client()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def file_part(url: str) -> dict:
    return {"type": "file", "file_url": {"url": url}}


def data_part(data: bytes, media_type: str, filename: str) -> dict:
    url = f"data:{media_type};base64," + base64.b64encode(data).decode()
    return {"type": "file", "file": {"file_data": url, "filename": filename}}


def png_data_part() -> dict:
    return image_part("data:image/png;base64," + base64.b64encode(PNG).decode())


def ask(client, auth, *parts, text="What is in it?", **body):
    content = [{"type": "text", "text": text}, *parts]
    return chat(client, auth, messages=[{"role": "user", "content": content}], **body)


def answer(response) -> str:
    assert response.status_code == 200, response.get_json()
    return response.get_json()["choices"][0]["message"]["content"]


def read_note(name: str, data: bytes) -> str:
    """How the emulated Kimi shows it read a file: its name, size and the start of its hash."""
    return f"{name} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]})"


def chat_blocks(emulator) -> list[dict]:
    return upstream_calls(emulator, CHAT)[-1]["body"]["message"]["blocks"]


@pytest.mark.parametrize(
    "part, name",
    [
        (lambda url: image_part(url + "/cat.png"), "cat.png"),
        # A data: URL names no file: it goes up named for its type, so Kimi sees the extension.
        (lambda url: png_data_part(), "image.png"),
    ],
    ids=["image-url", "image-data-url"],
)
def test_an_image_is_uploaded_and_read_by_kimi(
    files_client, auth, emulator, source_server, part, name
):
    emulator.state.configure(parse_seconds=0.2)  # processing at the first poll
    text = answer(ask(files_client, auth, part(source_server)))
    assert text == f"Emulator reply to: What is in it? [files: {read_note(name, PNG)}]"
    assert len(upstream_calls(emulator, "GetFileParseProgress")) == 2
    (record,) = emulator.state.web_files.snapshot()
    assert (record["content_type"], record["size"]) == ("image/png", len(PNG))
    assert record["sha256"] == hashlib.sha256(PNG).hexdigest()
    file_block, text_block = chat_blocks(emulator)
    assert file_block == {"message_id": "", "file": {"id": record["id"]}}
    assert text_block["text"]["content"].startswith("What is in it?")


def test_an_image_jpg_data_url_goes_up_as_jpeg(files_client, auth, emulator):
    """image/jpg is not a registered type, but clients send it for JPEG."""
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256))
    url = "data:image/jpg;base64," + base64.b64encode(jpeg).decode()
    assert read_note("image.jpg", jpeg) in answer(ask(files_client, auth, image_part(url)))
    (record,) = emulator.state.web_files.snapshot()
    assert (record["name"], record["content_type"]) == ("image.jpg", "image/jpeg")


def test_a_scanned_pdf_is_read_by_kimi_not_refused_here(
    files_client, auth, emulator, source_server
):
    text = answer(ask(files_client, auth, file_part(source_server + "/scan.pdf")))
    assert read_note("scan.pdf", SCAN) in text
    (record,) = emulator.state.web_files.snapshot()
    assert record["content_type"] == "application/pdf"
    assert record["sha256"] == hashlib.sha256(SCAN).hexdigest()
    assert "<document" not in chat_blocks(emulator)[-1]["text"]["content"]


def test_a_docx_is_uploaded_with_its_bytes_intact(files_client, auth, emulator):
    text = answer(ask(files_client, auth, data_part(DOCX, DOCX_TYPE, "contract.docx")))
    assert read_note("contract.docx", DOCX) in text
    (record,) = emulator.state.web_files.snapshot()
    assert (record["name"], record["content_type"]) == ("contract.docx", DOCX_TYPE)
    assert record["sha256"] == hashlib.sha256(DOCX).hexdigest()


def test_several_files_are_one_block_each_before_the_text(files_client, auth, emulator):
    parts = [png_data_part(), data_part(DOCX, DOCX_TYPE, "contract.docx")]
    text = answer(ask(files_client, auth, *parts))
    assert text.endswith(
        f"[files: {read_note('image.png', PNG)}, {read_note('contract.docx', DOCX)}]"
    )
    blocks = chat_blocks(emulator)
    ids = [record["id"] for record in emulator.state.web_files.snapshot()]
    assert [block["file"]["id"] for block in blocks[:-1]] == ids
    assert "text" in blocks[-1]


def test_a_large_file_streams_up_with_its_length_declared(
    files_client, auth, emulator, source_server
):
    answer(ask(files_client, auth, file_part(source_server + "/big.pdf")))
    (record,) = emulator.state.web_files.snapshot()
    digest = hashlib.sha256()
    for chunk in big_chunks():
        digest.update(chunk)
    assert (record["size"], record["sha256"]) == (BIG, digest.hexdigest())
    assert record["chunked"] is False and int(record["content_length"]) > BIG


def test_a_streamed_answer_reads_the_file_too(files_client, auth, emulator):
    response = ask(files_client, auth, png_data_part(), stream=True)
    assert response.status_code == 200
    assert read_note("image.png", PNG) in streamed_text(sse_events(response.get_data()))


def test_the_same_file_twice_from_one_account_is_uploaded_once(files_client, auth, emulator):
    first = answer(ask(files_client, auth, png_data_part()))
    second = answer(ask(files_client, auth, png_data_part(), text="And now?"))
    assert read_note("image.png", PNG) in first and read_note("image.png", PNG) in second
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    (record,) = emulator.state.web_files.snapshot()
    assert chat_blocks(emulator)[0] == {"message_id": "", "file": {"id": record["id"]}}


def test_a_remembered_file_kimi_no_longer_has_is_sent_again(files_client, auth, emulator):
    answer(ask(files_client, auth, png_data_part()))
    (first,) = emulator.state.web_files.snapshot()
    emulator.state.web_files.discard(first["id"])  # Kimi dropped the stored file
    text = answer(ask(files_client, auth, png_data_part(), text="Once more?"))
    assert read_note("image.png", PNG) in text
    assert len(upstream_calls(emulator, UPLOAD)) == 2
    refused, retried = [c["status"] for c in upstream_calls(emulator, CHAT)][1:]
    assert (refused, retried) == (400, 200)
    (second,) = emulator.state.web_files.snapshot()
    assert chat_blocks(emulator)[0]["file"]["id"] == second["id"] != first["id"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_remembered_file_refused_inside_the_stream_is_sent_again_in_a_new_chat(
    files_client, auth, emulator, stream
):
    """Kimi may open the chat before it refuses the turn (an error frame, not an HTTP error)."""
    answer(ask(files_client, auth, png_data_part()))
    emulator.state.add_fault("error_end:invalid_argument")
    response = ask(files_client, auth, png_data_part(), text="Once more?", stream=stream)
    assert response.status_code == 200
    text = streamed_text(sse_events(response.get_data())) if stream else answer(response)
    assert read_note("image.png", PNG) in text
    assert len(upstream_calls(emulator, UPLOAD)) == 2
    assert len(upstream_calls(emulator, CHAT)) == 3
    chats = emulator.state.chats()
    assert len(chats) == 3 and all(chat["deleted"] for chat in chats.values())


def test_a_refused_turn_with_files_just_sent_is_not_sent_again(files_client, auth, emulator):
    emulator.state.add_fault("server_error")
    assert ask(files_client, auth, png_data_part()).status_code == 502
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    assert len(upstream_calls(emulator, CHAT)) == 1


def test_a_rate_limit_does_not_make_remembered_files_upload_again(files_client, auth, emulator):
    answer(ask(files_client, auth, png_data_part()))
    emulator.state.add_fault("limit")
    assert ask(files_client, auth, png_data_part()).status_code == 429
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    assert len(upstream_calls(emulator, CHAT)) == 2


def test_another_account_uploads_its_own_copy(files_client, auth, emulator, new_account):
    other = {"Authorization": f"Bearer {new_account('bob').refresh_token}"}
    answer(ask(files_client, auth, png_data_part()))
    answer(ask(files_client, other, png_data_part()))
    owners = {record["user_id"] for record in emulator.state.web_files.snapshot()}
    assert len(owners) == 2


def test_a_failed_parse_is_a_502_naming_the_file(files_client, auth, emulator, source_server):
    emulator.state.add_fault("parse_failed")
    response = ask(files_client, auth, file_part(source_server + "/scan.pdf"))
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "file_parse_failed" and "scan.pdf" in error["message"]
    assert upstream_calls(emulator, CHAT) == []


def test_a_failed_parse_is_not_remembered(files_client, auth, emulator):
    emulator.state.add_fault("parse_failed")
    assert ask(files_client, auth, png_data_part()).status_code == 502
    answer(ask(files_client, auth, png_data_part()))
    assert len(upstream_calls(emulator, UPLOAD)) == 2


def test_a_parse_slower_than_file_parse_timeout_is_a_504(make_settings, auth, emulator):
    client = create_app(make_settings(file_parse_timeout=0.6)).test_client()
    emulator.state.add_fault("parse_slow", seconds=60)
    response = ask(client, auth, data_part(DOCX, DOCX_TYPE, "contract.docx"))
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "file_parse_timeout" and "contract.docx" in error["message"]
    assert upstream_calls(emulator, CHAT) == []


def test_a_kept_conversation_goes_on_after_a_turn_with_a_file(files_client, auth, emulator):
    first = ask(files_client, auth, png_data_part(), conversation_id="none")
    chat_id = first.get_json()["id"]
    assert read_note("image.png", PNG) in answer(first)
    messages = [
        {"role": "user", "content": "What is in it?"},
        {"role": "assistant", "content": answer(first)},
        {"role": "user", "content": "Describe it more."},
    ]
    second = chat(files_client, auth, messages=messages, conversation_id=chat_id)
    assert answer(second) == "Emulator reply to: Describe it more."
    body = upstream_calls(emulator, CHAT)[-1]["body"]
    assert body["chat_id"] == chat_id
    assert [list(block) for block in body["message"]["blocks"]] == [["message_id", "text"]]

    third = ask(files_client, auth, png_data_part(), text="Again?", conversation_id=chat_id)
    assert read_note("image.png", PNG) in answer(third)
    assert len(upstream_calls(emulator, UPLOAD)) == 1
    assert upstream_calls(emulator, CHAT)[-1]["body"]["chat_id"] == chat_id


def test_extract_mode_reads_documents_here_and_uploads_nothing(make_settings, auth, emulator):
    client = create_app(make_settings(web_file_mode="extract")).test_client()
    answer(ask(client, auth, data_part(DOCX, DOCX_TYPE, "contract.docx")))
    assert "Terms: pay in 30 days." in chat_blocks(emulator)[0]["text"]["content"]
    assert emulator.state.web_files.snapshot() == []
    assert upstream_calls(emulator, UPLOAD) == []


@pytest.mark.parametrize(
    "part, message",
    [
        (png_data_part(), "WEB_FILE_MODE=upload"),
        (data_part(SCAN, "application/pdf", "scan.pdf"), "no text layer"),
    ],
    ids=["image", "scanned-pdf"],
)
def test_extract_mode_refuses_what_only_kimi_can_read(make_settings, auth, emulator, part, message):
    client = create_app(make_settings(web_file_mode="extract")).test_client()
    response = ask(client, auth, part)
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]
    assert upstream_calls(emulator, CHAT) == []
