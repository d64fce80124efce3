"""The web upload flow at the boundary of our HTTP client: the multipart body, parse polling,
its failures and timeout, and the file-id cache. Everything above ``requests`` runs for real."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time

import pytest
import responses
from werkzeug.formparser import parse_form_data

from kimi.errors import RateLimited, UpstreamAuthRejected, UpstreamError, UpstreamTimeout
from kimi.files.sources import FileSource
from kimi.history import FileRef
from kimi.settings import Settings
from kimi.store import open_store
from kimi.upstream.base import Session
from kimi.upstream.web import WebUpstream
from kimi.upstream.web_upload import (
    PARSE_PROGRESS_PATH,
    UPLOAD_PATH,
    MultipartBody,
    progress_status,
    quoted_filename,
)

HOST = "https://kimi.test"
UPLOAD_URL = HOST + UPLOAD_PATH
PROGRESS_URL = HOST + PARSE_PROGRESS_PATH
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
SESSION = Session(access_token="access-1", user_id="user-1", device_id="7", session_id="8")
PROCESSING, SUCCESS, FAILED = (
    "PROCESS_STATUS_PROCESSING",
    "PROCESS_STATUS_SUCCESS",
    "PROCESS_STATUS_FAILED",
)


def settings(**overrides) -> Settings:
    return Settings(**{"base_url": HOST, "auth_url": HOST, **overrides})


def png_source(name: str = "photo.png", payload: bytes = PNG) -> FileSource:
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    return FileSource(FileRef(url, filename=name, kind="image"), settings())


def uploader(store=None, **overrides):
    upstream = WebUpstream(settings(**overrides), store=store)
    upstream.uploader.poll_seconds = 0.01
    return upstream.uploader


def accept_upload(file_id: str = "file-1") -> None:
    responses.post(UPLOAD_URL, json={"file": {"id": file_id, "meta": {"name": "photo.png"}}})


def progress(*statuses: str, file_id: str = "file-1") -> None:
    for status in statuses:
        responses.post(PROGRESS_URL, json={"progresses": [{"fileId": file_id, "status": status}]})


def calls_to(url: str) -> list:
    return [call for call in responses.calls if call.request.url == url]


def body_bytes(request) -> bytes:
    body = request.body
    return body.read() if hasattr(body, "read") else bytes(body)


def parse_multipart(request) -> tuple[dict, dict]:
    raw = body_bytes(request)
    environ = {
        "wsgi.input": io.BytesIO(raw),
        "CONTENT_TYPE": request.headers["Content-Type"],
        "CONTENT_LENGTH": str(len(raw)),
        "REQUEST_METHOD": "POST",
    }
    _, form, files = parse_form_data(environ)
    return form, files


@responses.activate
def test_the_upload_is_one_multipart_file_field_with_the_exact_bytes():
    captured = {}

    def answer(request):
        captured["length"] = request.headers.get("Content-Length")
        captured["chunked"] = request.headers.get("Transfer-Encoding")
        captured["form"], captured["files"] = parse_multipart(request)
        return 200, {}, json.dumps({"file": {"id": "file-1"}})

    responses.add_callback(responses.POST, UPLOAD_URL, callback=answer)
    progress(SUCCESS)
    with png_source() as source:
        assert uploader().upload(SESSION, source) == "file-1"
    assert list(captured["files"]) == ["file"] and not captured["form"]
    sent = captured["files"]["file"]
    assert (sent.filename, sent.mimetype, sent.read()) == ("photo.png", "image/png", PNG)
    assert captured["chunked"] is None


@responses.activate
def test_the_upload_declares_its_length_and_carries_the_accounts_credential():
    accept_upload()
    progress(SUCCESS)
    with png_source() as source:
        uploader().upload(SESSION, source)
        expected_length = len(MultipartBody(source))
    request = calls_to(UPLOAD_URL)[0].request
    assert request.headers["Content-Length"] == str(expected_length)
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert request.headers["Authorization"] == "Bearer access-1"
    assert request.headers["X-Traffic-Id"] == "user-1"


@responses.activate
def test_progress_is_polled_until_success_with_plain_json():
    accept_upload()
    progress(PROCESSING, PROCESSING, SUCCESS)
    with png_source() as source:
        assert uploader().upload(SESSION, source) == "file-1"
    polls = calls_to(PROGRESS_URL)
    assert len(polls) == 3
    for call in polls:
        assert json.loads(call.request.body) == {"file_ids": ["file-1"]}
        assert call.request.headers["Content-Type"] == "application/json"
        assert call.request.headers["Connect-Protocol-Version"] == "1"


@responses.activate
def test_a_failed_parse_is_a_502_naming_the_file():
    accept_upload()
    progress(PROCESSING, FAILED)
    with png_source("scan.png") as source, pytest.raises(UpstreamError) as raised:
        uploader().upload(SESSION, source)
    assert raised.value.status == 502
    assert raised.value.code == "file_parse_failed"
    assert "scan.png" in raised.value.message


@responses.activate
def test_a_parse_that_outlasts_the_timeout_is_a_504_naming_the_file():
    accept_upload()
    responses.post(PROGRESS_URL, json={"progresses": [{"fileId": "file-1", "status": PROCESSING}]})
    with png_source("slow.png") as source, pytest.raises(UpstreamTimeout) as raised:
        uploader(file_parse_timeout=0.05).upload(SESSION, source)
    assert raised.value.status == 504
    assert "slow.png" in raised.value.message and "FILE_PARSE_TIMEOUT" in raised.value.message
    assert len(calls_to(PROGRESS_URL)) >= 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"code": "unauthenticated", "message": "token expired"}, UpstreamAuthRejected),
        (429, {"code": "resource_exhausted", "message": "slow down"}, RateLimited),
        (500, {"code": "internal", "message": "storage down"}, UpstreamError),
    ],
)
@responses.activate
def test_upload_errors_map_like_every_other_call(status, body, error):
    responses.post(UPLOAD_URL, status=status, json=body)
    with png_source() as source, pytest.raises(error):
        uploader().upload(SESSION, source)
    assert calls_to(PROGRESS_URL) == []


@responses.activate
def test_an_upload_answered_without_a_file_id_is_a_502():
    responses.post(UPLOAD_URL, json={"file": {}})
    with png_source() as source, pytest.raises(UpstreamError) as raised:
        uploader().upload(SESSION, source)
    assert "photo.png" in raised.value.message


@pytest.mark.parametrize("read_size", [1, 7, 100, 4096, 1 << 20])
def test_the_multipart_body_reads_the_same_at_any_read_size(read_size):
    payload = bytes(range(256)) * 300
    with png_source(payload=payload) as source:
        body = MultipartBody(source, boundary="b0undary")
        reader = body.reader()
        pieces = list(iter(lambda: reader.read(read_size), b""))
        whole = b"".join(pieces)
        assert len(whole) == len(body)
    assert whole.startswith(b'--b0undary\r\nContent-Disposition: form-data; name="file"')
    assert whole.endswith(payload + b"\r\n--b0undary--\r\n")


def test_a_filename_cannot_break_out_of_its_header():
    assert quoted_filename('a"b\r\nX-Evil: 1.png') == "a%22b%0D%0AX-Evil: 1.png"
    assert quoted_filename("报告.pdf") == "报告.pdf"


def test_progress_status_reads_the_entry_of_the_file_asked_about():
    answer = {"progresses": [{"fileId": "other", "status": FAILED}, {"fileId": "f", "status": "X"}]}
    assert progress_status(answer, "f") == "X"
    assert progress_status({"progresses": [{"fileId": "other", "status": FAILED}]}, "f") == ""
    assert progress_status({}, "f") == ""


@responses.activate
def test_the_same_bytes_from_the_same_account_are_uploaded_once(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    accept_upload("file-1")
    progress(SUCCESS)
    files = uploader(store)
    with png_source("a.png") as first, png_source("renamed.png") as again:
        sent = files.file_ids(SESSION, (first,))
        remembered = files.file_ids(SESSION, (again,))
    assert (sent.ids, sent.remembered) == (("file-1",), False)
    assert (remembered.ids, remembered.remembered) == (("file-1",), True)
    assert len(calls_to(UPLOAD_URL)) == 1
    assert store.get(f"webfile:user-1:{hashlib.sha256(PNG).hexdigest()}") == "file-1"


@responses.activate
def test_another_account_or_other_bytes_upload_again(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    accept_upload("file-1")
    progress(SUCCESS, SUCCESS, SUCCESS)
    files = uploader(store)
    other_user = Session(access_token="access-2", user_id="user-2")
    with png_source() as source, png_source(payload=PNG + b"!") as changed:
        files.file_ids(SESSION, (source,))
        assert not files.file_ids(other_user, (source,)).remembered
        assert not files.file_ids(SESSION, (changed,)).remembered
    assert len(calls_to(UPLOAD_URL)) == 3


@responses.activate
def test_a_forgotten_file_is_uploaded_again(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    accept_upload("file-1")
    progress(SUCCESS, SUCCESS)
    files = uploader(store)
    with png_source() as source:
        files.file_ids(SESSION, (source,))
        files.forget(SESSION, (source,))
        assert not files.file_ids(SESSION, (source,)).remembered
    assert len(calls_to(UPLOAD_URL)) == 2


@responses.activate
def test_a_remembered_file_id_expires(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    accept_upload("file-1")
    progress(SUCCESS, SUCCESS)
    files = uploader(store, web_file_cache_seconds=0.05)
    with png_source() as source:
        files.file_ids(SESSION, (source,))
        time.sleep(0.1)
        files.file_ids(SESSION, (source,))
    assert len(calls_to(UPLOAD_URL)) == 2


@responses.activate
def test_an_account_without_a_user_id_is_never_cached(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    accept_upload("file-1")
    progress(SUCCESS, SUCCESS)
    files = uploader(store)
    anonymous = Session(access_token="access-3")
    with png_source() as source:
        files.file_ids(anonymous, (source,))
        files.file_ids(anonymous, (source,))
    assert len(calls_to(UPLOAD_URL)) == 2


def test_a_source_knows_the_sha256_of_its_bytes():
    with png_source() as source:
        assert source.sha256 == hashlib.sha256(PNG).hexdigest()
