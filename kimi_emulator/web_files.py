"""The ``web`` backend's file routes: a multipart upload and its parse progress, plus what the
Chat route needs to take ``file`` blocks.

The upload body is parsed as it streams into a sink that keeps only its size and SHA-256, so a
large file costs no memory and the call log never holds it. Errors take the Connect shape.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import IO, Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.formparser import FormDataParser

from .bodies import HashingSink, drain_body, json_body, sent_chunked
from .call_log import authenticated_user, record_call_status, record_upload_arrival
from .context import current_state
from .errors import EmulatorError
from .faults import WEB_PARSE_FAULTS, WEB_UPLOAD_FAULT_ERRORS, WEB_UPLOAD_FAULTS
from .legacy_replies import FILE_NOTE_LINE, FILES_NOTE
from .replies import ReplyRequest, answer_text
from .web_file_store import SUCCESS, WebFile, WebUploadReceipt

log = logging.getLogger(__name__)

bp = Blueprint("kimi_emulator_web_files", __name__)
bp.before_request(record_upload_arrival)
bp.after_request(record_call_status)

UPLOAD_PATH = "/apiv2-files/file/upload"
PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
UPLOAD_FIELD = "file"
HASH_SHOWN = 12  # hex digits of a file's SHA-256 that a reply shows


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    drain_body()
    return error.to_response()


@bp.post(UPLOAD_PATH)
def upload_file() -> Response:
    """Take one ``file`` field; answer the stored file (its parse starts now)."""
    user = authenticated_user()
    state = current_state()
    refused = state.take_fault(WEB_UPLOAD_FAULTS, user.user_id)
    if refused:
        log.info("refusing an upload with the %s fault", refused.name)
        raise WEB_UPLOAD_FAULT_ERRORS[refused.name]
    if request.mimetype != "multipart/form-data":
        raise EmulatorError("invalid_argument", "the upload must be multipart/form-data")
    receipt = _receive()
    fault = state.take_fault(WEB_PARSE_FAULTS, user.user_id)
    parse_seconds = state.config().parse_seconds
    if fault:
        log.info("the upload of %s meets the %s fault", receipt.name, fault.name)
    if fault and fault.name == "parse_slow":
        parse_seconds = fault.seconds
    fails = bool(fault and fault.name == "parse_failed")
    web_file = state.web_files.add(user.user_id, receipt, parse_seconds, fails)
    return jsonify(file=_file_object(web_file))


@bp.post(PROGRESS_PATH)
def parse_progress() -> Response:
    """``{"file_ids"}`` -> ``{"progresses": [{"fileId", "status"}]}``: unary Connect, plain JSON."""
    user = authenticated_user()
    if request.mimetype != "application/json":
        raise EmulatorError("invalid_argument", "content type must be application/json")
    ids = json_body().get("file_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise EmulatorError("invalid_argument", "file_ids must be a non-empty list of file ids")
    progresses = []
    for file_id in ids:
        web_file = current_state().web_files.owned(user.user_id, file_id)
        if web_file is None:
            raise EmulatorError("not_found", f"file {file_id} not found")
        progresses.append({"fileId": file_id, "status": current_status(web_file)})
    return jsonify(progresses=progresses)


def current_status(web_file: WebFile) -> str:
    """How far the file's parse has got, now."""
    return web_file.status(time.monotonic())


def message_files(user_id: str, message: Any) -> list[WebFile]:
    """The files a Chat message's ``file`` blocks name, in order; ``invalid_argument`` for an
    id the user does not own or whose parse has not succeeded, as the real backend refuses."""
    blocks = message.get("blocks") if isinstance(message, dict) else None
    files = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict) or "file" not in block:
            continue
        reference = block["file"]
        file_id = reference.get("id") if isinstance(reference, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise EmulatorError("invalid_argument", "a file block needs file.id")
        web_file = current_state().web_files.owned(user_id, file_id)
        if web_file is None:
            raise EmulatorError("invalid_argument", f"unknown file id {file_id!r}")
        if current_status(web_file) != SUCCESS:
            raise EmulatorError("invalid_argument", f"file {file_id!r} is not parsed")
        files.append(web_file)
    return files


def with_files_read(reply: ReplyRequest, files: list[WebFile]) -> ReplyRequest:
    """The reply to a message with files: the usual answer, then (as under legacy) a note
    naming each file, here with its size and the start of its SHA-256, to show it was read."""
    if not files:
        return reply
    about = replace(reply, prompt=FILE_NOTE_LINE.sub("", reply.prompt), search=False)
    read = ", ".join(f"{f.name} ({f.size} bytes, sha256 {f.sha256[:HASH_SHOWN]})" for f in files)
    return replace(reply, scripted=answer_text(about) + FILES_NOTE.format(read))


def _receive() -> WebUploadReceipt:
    sinks: list[HashingSink] = []

    def sink_factory(**_part: Any) -> IO[bytes]:
        sinks.append(HashingSink())
        return sinks[-1]  # type: ignore[return-value]

    # From request.stream, so that an error's drain reads on from where parsing stopped.
    parser = FormDataParser(stream_factory=sink_factory)
    _, form, files = parser.parse(
        request.stream, request.mimetype, request.content_length, request.mimetype_params
    )
    if list(files) != [UPLOAD_FIELD] or form or len(files.getlist(UPLOAD_FIELD)) != 1:
        raise EmulatorError("invalid_argument", "the upload must be one field named file")
    part = files[UPLOAD_FIELD]
    if not part.filename:
        raise EmulatorError("invalid_argument", "the file field needs a filename")
    sink = sinks[-1]
    return WebUploadReceipt(
        name=part.filename,
        content_type=part.mimetype or "application/octet-stream",
        size=sink.size,
        sha256=sink.digest.hexdigest(),
        content_length=request.headers.get("Content-Length"),
        chunked=sent_chunked(),
    )


def _file_object(web_file: WebFile) -> dict[str, Any]:
    return {
        "id": web_file.id,
        "meta": {
            "name": web_file.name,
            "contentType": web_file.content_type,
            "sizeBytes": str(web_file.size),
            "checksum": web_file.sha256,
            "ext": web_file.ext,
            "type": web_file.type,
        },
        "blob": {"signUrl": "", "previewUrl": ""},
        "parseResult": {},
    }
