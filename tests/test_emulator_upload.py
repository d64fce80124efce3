"""The emulator's legacy file and image flow: pre-sign, PUT the bytes, register, parse, refer."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from test_emulator_legacy import answer_of, bearer, completion, create_chat, read_events

from kimi_emulator import EmulatorServer, IssuedTokens

PDF = b"%PDF-1.4 a small emulated document\n"
PNG = b"\x89PNG\r\n\x1a\n an emulated image"
BIG_PIECE = bytes(range(256)) * 256  # 64 KiB
BIG_PIECES = 320  # 20 MiB in all
MEMORY_PROBE_PIECES = 1024  # 64 MiB, streamed through while memory is traced
# Werkzeug's server drains what a client may still send after each response with a 10 MB read
# buffer, so the peak includes that; a body held in memory would add its 64 MiB.
MEMORY_PEAK_LIMIT = 16 * 1024 * 1024


@pytest.fixture
def alice(emulator: EmulatorServer) -> IssuedTokens:
    return emulator.state.create_user("alice")


def post(url: str, user: IssuedTokens, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(url + path, json=body, headers=bearer(user.access_token), timeout=10)


def presign(url: str, user: IssuedTokens, name: str, action: str = "file") -> dict[str, Any]:
    response = post(url, user, "/api/pre-sign-url", {"action": action, "name": name})
    assert response.status_code == 200
    return response.json()


def put(signed: dict[str, Any], data: Any, content_type: str) -> requests.Response:
    return requests.put(signed["url"], data=data, headers={"Content-Type": content_type})


def file_body(signed: dict[str, Any], name: str, chat_id: str) -> dict[str, Any]:
    return {
        "type": "file",
        "name": name,
        "object_name": signed["object_name"],
        "file_id": "",
        "chat_id": chat_id,
    }


def image_body(signed: dict[str, Any], name: str) -> dict[str, Any]:
    return {"type": "image", "file_id": signed["file_id"], "name": name}


def register(url: str, user: IssuedTokens, body: dict[str, Any]) -> requests.Response:
    return post(url, user, "/api/file", body)


def parse(url: str, user: IssuedTokens, ids: list[str]) -> requests.Response:
    return post(url, user, "/api/file/parse_process", {"ids": ids, "timeout": 120000})


def uploaded_file(url: str, user: IssuedTokens, chat_id: str, name: str = "a.pdf") -> dict:
    """A file taken through the whole flow: uploaded, registered, polled and parsed."""
    signed = presign(url, user, name)
    assert put(signed, PDF, "application/pdf").status_code == 200
    register(url, user, file_body(signed, name, chat_id))
    registered = register(url, user, file_body(signed, name, chat_id)).json()
    assert parse(url, user, [registered["id"]]).json()["status"] == "parsed"
    return registered


def uploaded_image(url: str, user: IssuedTokens, name: str = "b.png") -> dict:
    signed = presign(url, user, name, "image")
    assert put(signed, PNG, "image/png").status_code == 200
    register(url, user, image_body(signed, name))
    return register(url, user, image_body(signed, name)).json()


def big_pieces(count: int = BIG_PIECES) -> Iterator[bytes]:
    for _ in range(count):
        yield BIG_PIECE


def big_body_sha256() -> str:
    digest = hashlib.sha256()
    for piece in big_pieces():
        digest.update(piece)
    return digest.hexdigest()


def ask_about(url: str, user: IssuedTokens, chat_id: str, files: list[dict]) -> requests.Response:
    return completion(
        url, user, chat_id, "summarise", refs=[f["id"] for f in files], refs_file=files
    )


def test_presign_answers_a_signed_url_on_the_emulator_and_unique_ids(emulator, alice) -> None:
    first = presign(emulator.url, alice, "a.pdf")
    second = presign(emulator.url, alice, "a.pdf")

    assert first["url"].startswith(f"{emulator.url}/_upload/{first['object_name']}?sig=")
    assert first["object_name"] != second["object_name"]
    assert first["file_id"] != second["file_id"]
    assert len(first["file_id"]) == 20 and first["file_id"].isalnum()
    assert first["file_id"] == first["file_id"].lower()


@pytest.mark.parametrize(
    "body", [{"action": "video", "name": "a.mp4"}, {"action": "file", "name": ""}, {}]
)
def test_presign_with_a_bad_action_or_name_is_a_validation_error(emulator, alice, body) -> None:
    response = post(emulator.url, alice, "/api/pre-sign-url", body)
    assert response.status_code == 400
    assert response.json()["error_type"] == "validation.error"


def test_presign_needs_an_access_token(emulator, alice) -> None:
    response = requests.post(
        emulator.url + "/api/pre-sign-url", json={"action": "file", "name": "a.pdf"}
    )
    assert response.status_code == 401
    assert response.json()["error_type"] == "auth.token.invalid"


def test_a_file_goes_through_the_whole_flow_into_the_answer(emulator, alice) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    signed = presign(url, alice, "a.pdf")
    assert put(signed, PDF, "application/pdf").json() == {}

    polls = [register(url, alice, file_body(signed, "a.pdf", chat_id)).json() for _ in range(2)]
    assert [poll["status"] for poll in polls] == ["initializing", "parsed"]
    assert polls[1] == {
        "id": signed["file_id"],
        "name": "a.pdf",
        "size": len(PDF),
        "type": "file",
        "status": "parsed",
    }
    parsed = parse(url, alice, [signed["file_id"]])
    assert parsed.json() == {"status": "parsed", "ids": [signed["file_id"]]}

    events = read_events(ask_about(url, alice, chat_id, [polls[1]]))
    assert answer_of(events) == "Emulator reply to: summarise [files: a.pdf]"
    assert events[0]["refs"] == [signed["file_id"]]


def test_parse_process_answers_parsing_once_for_a_file_not_polled_ready(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    signed = presign(emulator.url, alice, "a.pdf")
    put(signed, PDF, "application/pdf")
    registered = register(emulator.url, alice, file_body(signed, "a.pdf", chat_id)).json()

    first = parse(emulator.url, alice, [registered["id"]])
    second = parse(emulator.url, alice, [registered["id"]])

    assert first.status_code == second.status_code == 200
    assert [first.json()["status"], second.json()["status"]] == ["parsing", "parsed"]


def test_an_image_is_initialized_on_the_second_poll_and_named_in_the_answer(
    emulator, alice
) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    signed = presign(url, alice, "b.png", "image")
    put(signed, PNG, "image/png")

    polls = [register(url, alice, image_body(signed, "b.png")).json() for _ in range(2)]

    assert [poll["status"] for poll in polls] == ["initializing", "initialized"]
    assert polls[1]["type"] == "image" and polls[1]["size"] == len(PNG)
    events = read_events(ask_about(url, alice, chat_id, [polls[1]]))
    assert answer_of(events) == "Emulator reply to: summarise [files: b.png]"


def test_the_answer_names_files_in_ref_order(emulator, alice) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    image = uploaded_image(url, alice, "b.png")
    document = uploaded_file(url, alice, chat_id, "a.pdf")

    events = read_events(ask_about(url, alice, chat_id, [image, document]))

    assert answer_of(events) == "Emulator reply to: summarise [files: b.png, a.pdf]"


def test_the_answer_talks_about_the_last_line_that_is_not_a_file_note(emulator, alice) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    image = uploaded_image(url, alice, "b.png")
    prompt = "What is in it?\n[image: b.png]"

    response = completion(url, alice, chat_id, prompt, refs=[image["id"]], refs_file=[image])

    assert answer_of(read_events(response)) == "Emulator reply to: What is in it? [files: b.png]"


def test_registrations_are_recorded_with_owner_chat_and_hash(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    registered = uploaded_file(emulator.url, alice, chat_id)

    recorded = emulator.state.files()[registered["id"]]

    assert recorded["name"] == "a.pdf" and recorded["type"] == "file"
    assert (recorded["user_id"], recorded["chat_id"]) == (alice.user_id, chat_id)
    assert (recorded["size"], recorded["status"]) == (len(PDF), "parsed")
    assert recorded["sha256"] == hashlib.sha256(PDF).hexdigest()


@pytest.mark.parametrize("transfer", ["chunked", "content-length"])
def test_a_20_mib_upload_is_recorded_with_the_size_and_hash_sent(emulator, alice, transfer) -> None:
    signed = presign(emulator.url, alice, "big.bin")
    data = big_pieces() if transfer == "chunked" else b"".join(big_pieces())

    assert put(signed, data, "application/octet-stream").status_code == 200

    [upload] = emulator.state.uploads()
    assert upload == {
        "object_name": signed["object_name"],
        "file_id": signed["file_id"],
        "name": "big.bin",
        "action": "file",
        "user_id": alice.user_id,
        "size": BIG_PIECES * len(BIG_PIECE),
        "sha256": big_body_sha256(),
        "content_type": "application/octet-stream",
        "chunked": transfer == "chunked",
        "content_length": None if transfer == "chunked" else str(BIG_PIECES * len(BIG_PIECE)),
        "uploaded": True,
    }


def test_an_upload_streams_through_without_being_held_in_memory(emulator, alice) -> None:
    signed = presign(emulator.url, alice, "big.bin")
    tracemalloc.start()
    try:
        response = put(signed, big_pieces(MEMORY_PROBE_PIECES), "application/octet-stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200
    assert emulator.state.uploads()[0]["size"] == MEMORY_PROBE_PIECES * len(BIG_PIECE)
    assert peak < MEMORY_PEAK_LIMIT


def test_the_upload_is_logged_without_its_bytes_or_signature(emulator, alice) -> None:
    signed = presign(emulator.url, alice, "a.pdf")
    put(signed, PDF, "application/pdf")

    calls = emulator.state.calls()
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/api/pre-sign-url", 200),
        ("PUT", f"/_upload/{signed['object_name']}", 200),
    ]
    assert calls[0]["body"] == {"action": "file", "name": "a.pdf"}
    assert calls[1]["body"] is None and calls[1]["user_id"] == alice.user_id
    assert not calls[1]["auth"] and "sig=" not in str(calls)


@pytest.mark.parametrize("sig", ["forged", ""])
def test_an_upload_with_a_bad_signature_is_forbidden(emulator, alice, sig) -> None:
    signed = presign(emulator.url, alice, "a.pdf")
    url = signed["url"].split("?")[0] + (f"?sig={sig}" if sig else "")

    response = requests.put(url, data=PDF)

    assert response.status_code == 403
    assert response.json()["error_type"] == "upload.forbidden"
    assert not emulator.state.uploads()[0]["uploaded"]


def test_an_upload_to_an_unknown_object_is_forbidden(emulator, alice) -> None:
    signed = presign(emulator.url, alice, "a.pdf")
    url = signed["url"].replace(signed["object_name"], "0" * 32)

    response = requests.put(url, data=big_pieces())

    assert response.status_code == 403
    assert response.json()["error_type"] == "upload.forbidden"


def test_registering_before_the_upload_is_a_validation_error(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    signed = presign(emulator.url, alice, "a.pdf")

    response = register(emulator.url, alice, file_body(signed, "a.pdf", chat_id))

    assert response.status_code == 400
    assert response.json() == {"error_type": "validation.error", "message": "file not uploaded"}


def test_registering_another_users_upload_is_a_validation_error(emulator, alice) -> None:
    bob = emulator.state.create_user("bob")
    signed = presign(emulator.url, alice, "b.png", "image")
    put(signed, PNG, "image/png")

    response = register(emulator.url, bob, image_body(signed, "b.png"))

    assert response.status_code == 400
    assert response.json()["message"] == "file not uploaded"


@pytest.mark.parametrize("owner", ["nobody", "bob"])
def test_registering_a_file_in_a_chat_not_the_users_is_not_found(emulator, alice, owner) -> None:
    bob = emulator.state.create_user("bob")
    chat_id = create_chat(emulator.url, bob) if owner == "bob" else "0" * 20
    signed = presign(emulator.url, alice, "a.pdf")
    put(signed, PDF, "application/pdf")

    response = register(emulator.url, alice, file_body(signed, "a.pdf", chat_id))

    assert response.status_code == 404
    assert response.json()["error_type"] == "chat.not_found"


def test_parse_process_of_an_unknown_id_is_a_validation_error(emulator, alice) -> None:
    response = parse(emulator.url, alice, ["0" * 20])
    assert response.status_code == 400
    assert response.json()["error_type"] == "validation.error"


def test_a_completion_referring_to_an_unparsed_file_is_a_validation_error(emulator, alice) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    signed = presign(url, alice, "a.pdf")
    put(signed, PDF, "application/pdf")
    registered = register(url, alice, file_body(signed, "a.pdf", chat_id)).json()

    response = ask_about(url, alice, chat_id, [registered])

    assert response.status_code == 400
    assert response.json() == {"error_type": "validation.error", "message": "file not ready"}
    assert emulator.state.chats()[chat_id]["messages"] == []


def test_a_completion_referring_to_an_unknown_file_is_a_validation_error(emulator, alice) -> None:
    chat_id = create_chat(emulator.url, alice)
    response = completion(emulator.url, alice, chat_id, refs=["0" * 20])
    assert response.status_code == 400
    assert response.json()["message"] == "file not ready"


def test_another_users_file_cannot_be_referred_to(emulator, alice) -> None:
    bob = emulator.state.create_user("bob")
    image = uploaded_image(emulator.url, alice)

    response = ask_about(emulator.url, bob, create_chat(emulator.url, bob), [image])

    assert response.status_code == 400
    assert response.json()["message"] == "file not ready"


def test_presign_error_fault_fails_the_next_presign_only(emulator, alice) -> None:
    emulator.state.add_fault("presign_error")
    body = {"action": "file", "name": "a.pdf"}

    failed = post(emulator.url, alice, "/api/pre-sign-url", body)
    again = post(emulator.url, alice, "/api/pre-sign-url", body)

    assert failed.status_code == 500 and failed.json()["error_type"] == "internal"
    assert again.status_code == 200
    assert emulator.state.uploads()[0]["object_name"] == again.json()["object_name"]


def test_upload_forbidden_fault_refuses_the_next_put_only(emulator, alice) -> None:
    emulator.state.add_fault("upload_forbidden")
    signed = presign(emulator.url, alice, "a.pdf")

    refused = put(signed, PDF, "application/pdf")
    assert not emulator.state.uploads()[0]["uploaded"]
    accepted = put(signed, PDF, "application/pdf")

    assert refused.status_code == 403 and refused.json()["error_type"] == "upload.forbidden"
    assert accepted.status_code == 200 and emulator.state.uploads()[0]["uploaded"]


def test_parse_never_fault_keeps_the_next_registered_file_unready(emulator, alice) -> None:
    url, chat_id = emulator.url, create_chat(emulator.url, alice)
    emulator.state.add_fault("parse_never")
    signed = presign(url, alice, "a.pdf")
    put(signed, PDF, "application/pdf")

    polls = [register(url, alice, file_body(signed, "a.pdf", chat_id)).json() for _ in range(3)]
    parses = [parse(url, alice, [signed["file_id"]]).json()["status"] for _ in range(3)]

    assert {poll["status"] for poll in polls} == {"initializing"}
    assert parses == ["parsing"] * 3
    assert ask_about(url, alice, chat_id, [polls[-1]]).status_code == 400
    assert uploaded_file(url, alice, chat_id, "next.pdf")["status"] == "parsed"


def test_admin_api_lists_uploads_and_files_and_reset_forgets_them(emulator, alice) -> None:
    image = uploaded_image(emulator.url, alice)

    uploads = requests.get(emulator.url + "/_emulator/uploads").json()["uploads"]
    files = requests.get(emulator.url + "/_emulator/files").json()["files"]
    assert [upload["file_id"] for upload in uploads] == [image["id"]]
    assert uploads[0]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert files[image["id"]]["status"] == "initialized"

    requests.post(emulator.url + "/_emulator/reset")
    assert emulator.state.uploads() == [] and emulator.state.files() == {}
