"""The 2024 backend's file and image routes (``legacy`` protocol): pre-sign an upload, register
what was uploaded, and poll it until it is parsed.

The bytes go to the pre-signed URL, which ``uploads`` serves. Errors take the legacy shape.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .bodies import json_body
from .call_log import authenticated_user, record_call_arrival, record_call_status
from .context import current_state
from .errors import EmulatorError
from .faults import PRESIGN_FAULTS
from .state import FILE, IMAGE
from .uploads import upload_url

bp = Blueprint("kimi_emulator_files", __name__)
bp.before_request(record_call_arrival)
bp.after_request(record_call_status)

PARSED, PARSING = "parsed", "parsing"


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    return error.to_legacy_response()


@bp.post("/api/pre-sign-url")
def presign_upload() -> Response:
    """A URL to PUT one file's or image's bytes to, with the object name and file id to come."""
    user = authenticated_user()
    body = json_body()
    action = body.get("action")
    if action not in (FILE, IMAGE):
        raise EmulatorError("invalid_argument", "action must be file or image")
    name = _required_str(body, "name")
    state = current_state()
    if state.take_fault(PRESIGN_FAULTS, user.user_id):
        raise EmulatorError("internal", "object storage unavailable")
    upload = state.presign_upload(user.user_id, action, name)
    return jsonify(
        url=upload_url(upload.object_name), object_name=upload.object_name, file_id=upload.file_id
    )


@bp.post("/api/file")
def register_file() -> Response:
    """Register an uploaded file (by object name, in a chat) or image (by file id); called
    again with the same body, it reports how far the file got."""
    user = authenticated_user()
    body = json_body()
    kind = body.get("type")
    name = _required_str(body, "name")
    if kind == FILE:
        key, chat_id = _required_str(body, "object_name"), _required_str(body, "chat_id")
    elif kind == IMAGE:
        key, chat_id = _required_str(body, "file_id"), ""
    else:
        raise EmulatorError("invalid_argument", "type must be file or image")
    registered = current_state().register_file(user.user_id, kind, key, name, chat_id)
    return jsonify(
        id=registered.id,
        name=registered.name,
        size=registered.size,
        type=registered.type,
        status=registered.status,
    )


@bp.post("/api/file/parse_process")
def parse_files() -> Response:
    """``parsed`` once all the caller's files are; ``parsing`` (and one step on) until then."""
    user = authenticated_user()
    ids = json_body().get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise EmulatorError("invalid_argument", "ids must be a non-empty list of file ids")
    parsed = current_state().parse_files(user.user_id, ids)
    return jsonify(status=PARSED if parsed else PARSING, ids=ids)


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EmulatorError("invalid_argument", f"{name} must be a non-empty string")
    return value
