"""The doctor's walk: each upstream step of the configured protocol, through the real adapter.

Every step calls the product's own code (the adapter's methods, ``Accounts`` for the refresh,
so a rotated token lands in the service's state store), then checks what came back for the
shapes the service relies on. A step whose needs failed is skipped.
"""

from __future__ import annotations

import base64
import logging
import struct
import time
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from ..accounts import Accounts
from ..errors import KimiError, UpstreamAuthRejected
from ..events import (
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    ChatOpened,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
)
from ..files.sources import FileSource
from ..history import FileRef, Message
from ..models import ModelOptions
from ..settings import Settings
from ..tokens import Credential
from ..upstream.base import Session, TurnTarget, Upstream
from ..upstream.http import translate_transport_errors
from .diagnosis import (
    SHAPE_ERRORS,
    AnswerFiltered,
    ProtocolChanged,
    UnreadStreamError,
    diagnose,
    error_object,
)
from .masking import Masker
from .report import OK, SKIPPED, StepResult
from .wire import Recorder

log = logging.getLogger(__name__)

PROMPT = "Reply with the single word: ok"
IMAGE_NAME = "kimi-doctor.png"
# What a failing step may raise: the service's errors, transport errors, and what an adapter
# raises when an answer's shape has drifted under it.
STEP_ERRORS = (KimiError, requests.RequestException, *SHAPE_ERRORS)


@dataclass
class Walk:
    """What the steps share: the parts of the service, and what earlier steps found."""

    settings: Settings
    upstream: Upstream
    accounts: Accounts
    credential: Credential
    recorder: Recorder
    session: Session | None = None
    chat_id: str | None = None
    answer: Generator[Event, None, None] | None = None
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One step: ``run`` returns a short detail or raises; ``needs`` are steps it builds on;
    ``continues`` is a step whose exchange it goes on reading (the stream of the chat)."""

    name: str
    run: Callable[[Walk], str]
    needs: tuple[str, ...] = ()
    continues: str | None = None


def reach(walk: Walk) -> str:
    """TCP, TLS and any HTTP answer from each host (the answer's status does not matter)."""
    settings = walk.settings
    seen = []
    for url in dict.fromkeys([settings.base_url, settings.auth_url]):
        host = urlsplit(url).netloc
        with translate_transport_errors(f"reaching {host}"):
            response = walk.upstream.http.get(  # type: ignore[attr-defined]
                url + "/", timeout=settings.timeout, stream=True, allow_redirects=False
            )
            response.close()
        tls = " over TLS" if url.startswith("https://") else ""
        seen.append(f"HTTP {response.status_code} from {host}{tls}")
    return "; ".join(seen)


def refresh(walk: Walk) -> str:
    """A real refresh through ``Accounts``, so a rotated refresh token is stored where the
    service reads it; an access token is used as it is."""
    credential, accounts = walk.credential, walk.accounts
    if not credential.claims:
        raise UpstreamAuthRejected("This is not a Kimi token: Kimi's tokens are JWTs.")
    expires_at = credential.expires_at
    if expires_at is not None and expires_at <= time.time():
        raise UpstreamAuthRejected("The token's own expiry (exp) has passed.")
    if credential.is_access_token:
        walk.session, _ = accounts.session(credential)
        left = f", valid {_minutes(expires_at)} more" if expires_at else ""
        return f"an access token: used as it is, no refresh{left}"
    used_stored = accounts.has_rotated_token(credential)
    walk.session, grant = accounts.refresh_now(credential)
    detail = f"new access token ({_minutes(grant.expires_at)})"
    if walk.upstream.rotates_refresh_tokens:
        detail += f"; the rotated refresh token is kept in {accounts.store.describe()}"
    if used_stored:
        detail += " (refreshed with the rotated token kept there, not the one given)"
    return detail


def identify(walk: Walk) -> str:
    """Kimi names the account's user (``GetSubscription`` on web, ``/api/user`` on legacy)."""
    if not walk.upstream.check(_session(walk)):
        raise ProtocolChanged("Kimi's account answer named no user.")
    named = "the access token names its user" if _session(walk).user_id else "no user id known"
    return f"account {walk.credential.label} is alive; {named}"


def models(walk: Walk) -> str:
    """The live model catalog (legacy has none: its research quota is read instead)."""
    upstream = walk.upstream
    if upstream.name == "legacy":
        upstream.check_research_quota(_session(walk))  # type: ignore[attr-defined]
        count = len(upstream.static_models())
        return f"no live catalog on this protocol; {count} built-in models; research quota left"
    ids = upstream.list_models(_session(walk))
    if not ids:
        raise ProtocolChanged("The model list was empty, or in a shape this version does not read.")
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return f"{len(ids)} live models ({shown})"


def open_chat(walk: Walk) -> str:
    """Start a one-shot turn and read until Kimi names the chat it lives in."""
    target = TurnTarget(messages=(Message("user", PROMPT),), options=ModelOptions())
    walk.answer = walk.upstream.stream_turn(_session(walk), target)
    for event in walk.answer:
        walk.events.append(event)
        if isinstance(event, ChatOpened):
            walk.chat_id = event.chat_id
            return "opened a one-shot chat with a one-line prompt"
    raise ProtocolChanged("The answer ended without naming the chat it lives in.")


def read_stream(walk: Walk) -> str:
    """Read the answer to its end; it must carry text and end normally."""
    assert walk.answer is not None  # "chat" succeeded
    walk.events.extend(walk.answer)
    text = "".join(event.text for event in walk.events if isinstance(event, TextDelta))
    thought = any(isinstance(event, ReasoningDelta) for event in walk.events)
    finish = next((event for event in walk.events if isinstance(event, Finish)), None)
    messages = [m for exchange in _chat_exchanges(walk) for m in exchange.messages()]
    if finish is not None and finish.reason == FINISH_CONTENT_FILTER:
        raise AnswerFiltered("The answer was stopped by Kimi's content filter.")
    unread = next((error_object(m) for m in messages if error_object(m)), None)
    if unread is not None:
        raise UnreadStreamError(f"The answer ended normally, yet Kimi's stream carried {unread}.")
    if finish is None or not text.strip():
        raise ProtocolChanged("The stream ended without any answer text.")
    detail = f"{len(text)} characters of answer" + (" after thinking" if thought else "")
    detail += f", finish_reason {finish.reason}"
    if finish.reason == FINISH_LENGTH:
        detail += " (Kimi's length limit, after the continuations the service makes)"
    notices = [m["notice"] for m in messages if isinstance(m, dict) and m.get("notice")]
    if notices:
        detail += f"; note: Kimi said {notices[0]}"
    return detail


def upload(walk: Walk) -> str:
    """Upload a tiny PNG made here and wait until Kimi has read it."""
    ref = FileRef(tiny_png_data_url(), IMAGE_NAME, "image")
    with FileSource(ref, walk.settings) as source:
        uploader = walk.upstream.uploader  # type: ignore[attr-defined]
        if walk.upstream.name == "legacy":
            uploader.upload(_session(walk), walk.chat_id, source)  # a legacy file joins a chat
        else:
            uploader.upload(_session(walk), source)
        return f"uploaded a {source.length}-byte PNG; Kimi read it"


def delete(walk: Walk) -> str:
    """Delete the doctor's chat, so the account's chat list stays clean."""
    assert walk.chat_id is not None  # "chat" succeeded
    walk.upstream.delete_chat(_session(walk), walk.chat_id)
    return "deleted the doctor's chat"


def steps_for(protocol: str) -> list[Step]:
    """The walk of one protocol, in order. A legacy upload belongs to a chat; a web one not."""
    upload_needs = ("chat",) if protocol == "legacy" else ("refresh",)
    return [
        Step("reach", reach),
        Step("refresh", refresh, needs=("reach",)),
        Step("identify", identify, needs=("refresh",)),
        Step("models", models, needs=("refresh",)),
        Step("chat", open_chat, needs=("refresh",)),
        Step("stream", read_stream, needs=("chat",), continues="chat"),
        Step("upload", upload, needs=upload_needs),
        Step("delete", delete, needs=("chat",)),
    ]


def run_steps(walk: Walk, steps: list[Step], masker: Masker) -> list[StepResult]:
    """Run the steps in order: each ok, failed (diagnosed) or skipped."""
    results: dict[str, StepResult] = {}
    try:
        for step in steps:
            results[step.name] = _run_step(walk, step, results, masker)
    finally:
        if walk.answer is not None:
            walk.answer.close()
    return list(results.values())


def _run_step(walk: Walk, step: Step, results: dict[str, StepResult], masker: Masker) -> StepResult:
    missing = [name for name in step.needs if results[name].status != OK]
    if missing:
        return StepResult(step.name, SKIPPED, f"needs {', '.join(missing)}")
    walk.recorder.step = step.name
    started = time.monotonic()
    try:
        result = StepResult(step.name, OK, masker.text(step.run(walk)))
    except STEP_ERRORS as exc:
        log.debug("doctor step %s failed", step.name, exc_info=True)
        exchanges = walk.recorder.touched(step.name)
        if not exchanges and step.continues:
            exchanges = walk.recorder.touched(step.continues)
        result = diagnose(step.name, exc, exchanges, walk.settings, masker)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _chat_exchanges(walk: Walk) -> list[Any]:
    return walk.recorder.touched("chat") + [
        exchange for exchange in walk.recorder.touched("stream") if "chat" not in exchange.steps
    ]


def _session(walk: Walk) -> Session:
    assert walk.session is not None  # "refresh" succeeded
    return walk.session


def _minutes(expires_at: float) -> str:
    return f"{max(0, round((expires_at - time.time()) / 60))} min"


def tiny_png_data_url() -> str:
    """A 1x1 white PNG, made here (no file to ship), as a ``data:`` URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\xff\xff")  # filter byte, one white pixel
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    png += chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
