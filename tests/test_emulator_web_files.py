"""The emulator's web file flow: multipart upload, parse progress, file blocks in the Chat call."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from test_emulator import answer_of, post_chat, read_frames

from kimi.upstream.connect import encode_frame
from kimi_emulator import EmulatorServer, IssuedTokens

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
PNG = b"\x89PNG\r\n\x1a\n an emulated image"
BOUNDARY = "emulated-boundary"
BIG_PIECE = bytes(range(256)) * 256  # 64 KiB
MEMORY_PROBE_PIECES = 1024  # 64 MiB, streamed through while memory is traced
# As for the legacy PUT: werkzeug's 10 MB drain buffer is in the peak, a held body would add 64.
MEMORY_PEAK_LIMIT = 16 * 1024 * 1024


@pytest.fixture
def alice(emulator: EmulatorServer) -> IssuedTokens:
    return emulator.state.create_user("alice")


def multipart(pieces: list[bytes] | Iterator[bytes], name: str, content_type: str):
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    yield from pieces
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(
    url: str, user: IssuedTokens, data: bytes = PNG, name: str = "cat.png", **headers: str
) -> requests.Response:
    return requests.post(
        url + UPLOAD_PATH,
        data=b"".join(multipart([data], name, "image/png")),
        headers={
            "Authorization": f"Bearer {user.access_token}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            **headers,
        },
        timeout=10,
    )


def progress(url: str, user: IssuedTokens, file_ids: list[str]) -> requests.Response:
    return requests.post(
        url + PROGRESS_PATH,
        json={"file_ids": file_ids},
        headers={"Authorization": f"Bearer {user.access_token}", "Connect-Protocol-Version": "1"},
        timeout=10,
    )


def status_of(url: str, user: IssuedTokens, file_id: str) -> str:
    response = progress(url, user, [file_id])
    assert response.status_code == 200, response.text
    (entry,) = response.json()["progresses"]
    assert entry["fileId"] == file_id
    return entry["status"]


def chat_with_files(url: str, user: IssuedTokens, file_ids: list[str], prompt: str = "Look"):
    blocks: list[dict[str, Any]] = [{"message_id": "", "file": {"id": i}} for i in file_ids]
    blocks.append({"message_id": "", "text": {"content": prompt}})
    message = {"parent_id": "", "role": "user", "blocks": blocks}
    body = encode_frame({"scenario": "SCENARIO_K2D5", "chat_id": "", "message": message})
    return post_chat(url, user.access_token, body)


def test_an_upload_answers_the_file_object_and_records_its_bytes(emulator, alice) -> None:
    response = upload(emulator.url, alice)
    assert response.status_code == 200, response.text
    meta = response.json()["file"]["meta"]
    assert meta["name"] == "cat.png" and meta["type"] == "FILE_TYPE_IMAGE"
    assert meta["sizeBytes"] == str(len(PNG))
    assert meta["checksum"] == hashlib.sha256(PNG).hexdigest()
    (record,) = emulator.state.web_files.snapshot()
    assert record["user_id"] == alice.user_id
    assert (record["name"], record["content_type"], record["size"]) == (
        "cat.png",
        "image/png",
        len(PNG),
    )
    assert record["sha256"] == hashlib.sha256(PNG).hexdigest()


def test_the_parse_moves_from_processing_to_success(emulator, alice) -> None:
    emulator.state.configure(parse_seconds=0.3)
    file_id = upload(emulator.url, alice).json()["file"]["id"]
    assert status_of(emulator.url, alice, file_id) == "PROCESS_STATUS_PROCESSING"
    emulator.state.configure(parse_seconds=0.0)  # only files uploaded from now on
    assert status_of(emulator.url, alice, file_id) == "PROCESS_STATUS_PROCESSING"
    finished = upload(emulator.url, alice).json()["file"]["id"]
    assert status_of(emulator.url, alice, finished) == "PROCESS_STATUS_SUCCESS"


def test_the_parse_failed_fault_fails_the_next_upload_only(emulator, alice) -> None:
    emulator.state.configure(parse_seconds=0.0)
    emulator.state.add_fault("parse_failed")
    failed = upload(emulator.url, alice).json()["file"]["id"]
    fine = upload(emulator.url, alice).json()["file"]["id"]
    assert status_of(emulator.url, alice, failed) == "PROCESS_STATUS_FAILED"
    assert status_of(emulator.url, alice, fine) == "PROCESS_STATUS_SUCCESS"


def test_the_parse_slow_fault_keeps_the_file_processing(emulator, alice) -> None:
    emulator.state.configure(parse_seconds=0.0)
    emulator.state.add_fault("parse_slow", seconds=60)
    file_id = upload(emulator.url, alice).json()["file"]["id"]
    assert status_of(emulator.url, alice, file_id) == "PROCESS_STATUS_PROCESSING"


def test_progress_of_an_unknown_or_anothers_file_is_not_found(emulator, alice) -> None:
    bob = emulator.state.create_user("bob")
    file_id = upload(emulator.url, alice).json()["file"]["id"]
    assert progress(emulator.url, bob, [file_id]).status_code == 404
    assert progress(emulator.url, alice, ["nope"]).status_code == 404


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"".join(multipart([PNG], "a.png", "image/png")), "application/octet-stream"),
        (
            b"".join(multipart([PNG], "a.png", "image/png")).replace(b'name="file"', b'name="x"'),
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
    ],
    ids=["not-multipart", "wrong-field"],
)
def test_an_upload_that_is_not_one_file_field_is_refused(emulator, alice, body, content_type):
    headers = {"Authorization": f"Bearer {alice.access_token}", "Content-Type": content_type}
    response = requests.post(emulator.url + UPLOAD_PATH, data=body, headers=headers, timeout=10)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert emulator.state.web_files.snapshot() == []


def test_an_upload_needs_an_access_token(emulator, alice) -> None:
    response = upload(emulator.url, alice, Authorization="Bearer nonsense")
    assert response.status_code == 401
    assert emulator.state.web_files.snapshot() == []


def test_a_chat_with_a_parsed_file_answers_about_it(emulator, alice) -> None:
    emulator.state.configure(parse_seconds=0.0)
    file_id = upload(emulator.url, alice).json()["file"]["id"]
    answer = answer_of(read_frames(chat_with_files(emulator.url, alice, [file_id])))
    digest = hashlib.sha256(PNG).hexdigest()[:12]
    assert answer == f"Emulator reply to: Look [files: cat.png ({len(PNG)} bytes, sha256 {digest})]"


@pytest.mark.parametrize("whose", ["unknown", "unparsed", "failed", "another-users"])
def test_a_chat_refuses_a_file_it_cannot_use(emulator, alice, whose) -> None:
    if whose == "unknown":
        file_id = "no-such-file"
    elif whose == "another-users":
        emulator.state.configure(parse_seconds=0.0)
        file_id = upload(emulator.url, emulator.state.create_user("bob")).json()["file"]["id"]
    else:
        emulator.state.configure(parse_seconds=60 if whose == "unparsed" else 0.0)
        if whose == "failed":
            emulator.state.add_fault("parse_failed")
        file_id = upload(emulator.url, alice).json()["file"]["id"]
    response = chat_with_files(emulator.url, alice, [file_id])
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"
    assert emulator.state.chats() == {}


def test_an_upload_streams_through_without_being_held_in_memory(emulator, alice) -> None:
    headers = {
        "Authorization": f"Bearer {alice.access_token}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    pieces = (BIG_PIECE for _ in range(MEMORY_PROBE_PIECES))
    tracemalloc.start()
    try:
        response = requests.post(
            emulator.url + UPLOAD_PATH,
            data=multipart(pieces, "big.bin", "application/octet-stream"),
            headers=headers,
            timeout=60,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    (record,) = emulator.state.web_files.snapshot()
    assert record["size"] == MEMORY_PROBE_PIECES * len(BIG_PIECE)
    assert peak < MEMORY_PEAK_LIMIT


def test_the_upload_is_logged_without_its_bytes_and_listed_by_the_admin_api(emulator, alice):
    upload(emulator.url, alice)
    (call,) = [c for c in emulator.state.calls() if c["path"] == UPLOAD_PATH]
    assert call["body"] is None and call["auth"] and call["user_id"] == alice.user_id
    listed = requests.get(emulator.url + "/_emulator/web_files", timeout=10).json()["web_files"]
    assert [f["sha256"] for f in listed] == [hashlib.sha256(PNG).hexdigest()]
