"""The Responses surface: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

The same turn engine as chat completions, with the Responses request model and encoder.
``store`` (the default) keeps the Kimi chat and records the response, so that
``previous_response_id`` continues that chat with only the new input; errors keep OpenAI's shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .auth import Pool, resolve_pool
from .errors import KimiError, NotFound
from .response_records import ResponseRecords, StoredResponse
from .responses_encoder import OnDone, ResponseEncoder
from .responses_request import ResponsesRequest, parse_responses_request, previous_response_id
from .routes import _collect, _json_body, service
from .streaming import stream_turn

log = logging.getLogger(__name__)
bp = Blueprint("responses", __name__)


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    kimi = service()
    pool = resolve_pool(kimi.settings, request.headers.get("Authorization"))
    body = _json_body()
    previous_id = previous_response_id(body)
    previous = _owned(previous_id, pool, param="previous_response_id") if previous_id else None
    parsed = parse_responses_request(
        body,
        max_files=kimi.settings.max_files_per_message,
        prior_calls=previous.call_names() if previous else None,
    )
    if previous is not None:
        parsed = replace(parsed, chat=replace(parsed.chat, conversation_id=previous.chat_id))
    turn = kimi.start_turn(parsed.chat, pool)
    encoder = ResponseEncoder(parsed)
    keep = _keeper(parsed, pool)
    if parsed.stream:

        def encode(events: Iterable[Any]) -> Iterator[bytes]:
            return encoder.stream(events, on_done=keep)

        with _previous_response_named():
            return stream_turn(kimi, turn, encode)
    with turn, _previous_response_named():
        reply = _collect(parsed.chat, turn)
    answer = encoder.response(reply)
    if keep is not None:
        keep(answer, reply.chat_id)
    return jsonify(answer)


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    pool = resolve_pool(service().settings, request.headers.get("Authorization"))
    return jsonify(_owned(response_id, pool).body)


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    """Forget the response and delete its Kimi chat (responses chained after it share it)."""
    pool = resolve_pool(service().settings, request.headers.get("Authorization"))
    record = _owned(response_id, pool)
    _records().delete(response_id)
    _delete_chat(record, pool)
    return jsonify({"id": response_id, "object": "response.deleted", "deleted": True})


@contextmanager
def _previous_response_named() -> Iterator[None]:
    """A kept chat Kimi no longer knows is the client's ``previous_response_id``: this surface
    has no ``conversation_id`` to point at."""
    try:
        yield
    except NotFound as exc:
        if exc.param == "conversation_id":
            exc.param = "previous_response_id"
        raise


def _records() -> ResponseRecords:
    kimi = service()
    return ResponseRecords(kimi.store, kimi.settings.conversation_ttl_seconds)


def _owned(response_id: str, pool: Pool, *, param: str | None = None) -> StoredResponse:
    """The stored response, if this caller may see it; another caller's is as unknown as a
    missing one (whether it exists is not told either)."""
    record = _records().get(response_id)
    accounts = {credential.account_id for credential in pool.credentials}
    if record is None or record.owner != pool.owner or record.account_id not in accounts:
        raise NotFound(
            f"No response with id {response_id!r}: it was never stored here (store: false), "
            "was deleted, or has expired.",
            param=param,
        )
    return record


def _keeper(parsed: ResponsesRequest, pool: Pool) -> OnDone | None:
    """What records a finished response, when the request asked to store it."""
    if not parsed.store:
        return None
    records, conversations = _records(), service().conversations

    def keep(answer: dict[str, Any], chat_id: str | None) -> None:
        conversation = conversations.get(chat_id) if chat_id else None
        if conversation is None:
            log.warning("Response %s not stored: Kimi named no kept chat for it", answer["id"])
            return
        record = StoredResponse(answer["id"], chat_id, conversation.account_id, pool.owner, answer)
        records.save(record)

    return keep


def _delete_chat(record: StoredResponse, pool: Pool) -> None:
    kimi = service()
    credential = next(c for c in pool.credentials if c.account_id == record.account_id)
    try:
        session, _ = kimi.accounts.session(credential)
        kimi.upstream.delete_chat(session, record.chat_id)
    except KimiError as exc:
        # The record is gone either way; the chat stays in the account's Kimi history.
        log.warning("Could not delete the Kimi chat of %s: %s", record.response_id, exc.message)
