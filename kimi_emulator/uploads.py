"""The pre-signed upload URLs of the legacy file flow: a PUT of raw bytes, hashed as it streams.

The body is read in pieces and only its size and SHA-256 are kept, so a 100 MB upload costs no
more memory than a small one, and the call log never holds it. Werkzeug's server dechunks a
``Transfer-Encoding: chunked`` body and marks the environ ``wsgi.input_terminated``; without
that mark ``request.stream`` reads as empty for a body without ``Content-Length``.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request

from .bodies import READ_SIZE, HashingSink, drain_body, sent_chunked
from .call_log import note_caller, record_call_status, record_upload_arrival
from .context import current_state
from .errors import UPLOAD_FORBIDDEN, EmulatorError
from .faults import UPLOAD_FAULTS
from .state import UploadReceipt

log = logging.getLogger(__name__)

bp = Blueprint("kimi_emulator_uploads", __name__)
bp.before_request(record_upload_arrival)
bp.after_request(record_call_status)

UPLOAD_PREFIX = "_upload/"


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    drain_body()
    return error.to_legacy_response()


def upload_url(object_name: str) -> str:
    """The absolute pre-signed URL to PUT ``object_name``'s bytes to."""
    query = urlencode({"sig": current_state().upload_signature(object_name)})
    return f"{request.host_url}{UPLOAD_PREFIX}{object_name}?{query}"


@bp.put(f"/{UPLOAD_PREFIX}<object_name>")
def receive_upload(object_name: str) -> Response:
    """Store what arrived (its size and hash, never the bytes); no token, the URL is signed."""
    state = current_state()
    owner = state.upload_owner(object_name, request.args.get("sig", ""))
    note_caller(owner)
    if state.take_fault(UPLOAD_FAULTS, owner):
        log.info("refusing an upload with the upload_forbidden fault")
        raise EmulatorError("permission_denied", "upload refused", UPLOAD_FORBIDDEN)
    state.finish_upload(object_name, _measure_body())
    return jsonify({})


def _measure_body() -> UploadReceipt:
    sink = HashingSink()
    while chunk := request.stream.read(READ_SIZE):
        sink.write(chunk)
    return UploadReceipt(
        size=sink.size,
        sha256=sink.digest.hexdigest(),
        content_type=request.headers.get("Content-Type"),
        chunked=sent_chunked(),
        content_length=request.headers.get("Content-Length"),
    )
