"""The log of backend calls and who made them, shared by the ``web`` and ``legacy`` routes.

Each blueprint registers ``record_call_arrival`` (``record_upload_arrival`` for bodies that
must stream) and ``record_call_status`` as its request hooks; routes find the caller with
``authenticated_user``, which also notes the user on the call.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, g, request

from .bodies import loggable_body
from .context import current_state
from .errors import EmulatorError
from .state import CallRecord, User
from .tokens import TokenError

# Never Authorization: the log says only whether it was sent.
LOGGED_HEADERS = (
    "X-Msh-Platform",
    "X-Msh-Device-Id",
    "X-Msh-Session-Id",
    "X-Traffic-Id",
    "X-Msh-Version",
    "Connect-Protocol-Version",
    "R-Timezone",
    "Content-Type",
    "Origin",
    "Referer",
)


def record_call_arrival() -> None:
    """Log the call as it arrives, before any route can refuse it."""
    _record_arrival(loggable_body())


def record_upload_arrival() -> None:
    """Log an upload as it arrives, without its body: that is streamed, never read into memory
    (nor kept in the log)."""
    _record_arrival(None)


def _record_arrival(body: Any) -> None:
    headers = {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers}
    record = CallRecord(
        method=request.method,
        path=request.path,
        headers=headers,
        auth="Authorization" in request.headers,
        body=body,
        arrived_at=time.monotonic(),
    )
    g.emulator_call = current_state().begin_call(record)


def record_call_status(response: Response) -> Response:
    """Fill in the status the call was answered with."""
    current_state().update_call(
        g.emulator_call, status=response.status_code, answered_at=time.monotonic()
    )
    return response


def note_caller(user_id: str) -> None:
    """Record who made the current call."""
    current_state().update_call(g.emulator_call, user_id=user_id)


def bearer_token(kind: str = "access") -> str:
    """The request's ``Authorization: Bearer`` token; ``unauthenticated`` when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise EmulatorError("unauthenticated", f"missing {kind} token")
    return token.strip()


def authenticated_user() -> User:
    """The user whose access token the request carries, noted on the call."""
    try:
        user = current_state().authenticate(bearer_token())
    except TokenError as exc:
        raise EmulatorError("unauthenticated", str(exc)) from exc
    note_caller(user.user_id)
    return user
