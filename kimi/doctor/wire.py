"""Recording what crosses the wire between an adapter's ``requests.Session`` and Kimi.

``record_session`` wraps each transport adapter mounted on the session: every request is
noted as it is sent, and the response's body is teed as the product's own code reads it
(streamed or not), so the record is what truly arrived, in the pieces it arrived in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

from ..upstream.connect import FrameDecoder, FrameError

CONNECT_TYPE = "application/connect"
SSE_TYPE = "text/event-stream"


@dataclass
class Exchange:
    """One request and what came back: its status, headers and the body bytes read so far."""

    step: str
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes | str | None  # None: a stream the recorder does not show
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    error: str | None = None  # a transport failure: no answer, or the body broke off
    steps: list[str] = field(default_factory=list)  # the steps it was sent or read in

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    @property
    def content_type(self) -> str:
        return self.response_headers.get("Content-Type", "").split(";")[0].strip().lower()

    def response_json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(bytes(self.body).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def frames(self) -> list[dict[str, Any]]:
        """The Connect frames that arrived whole, as ``{"flags", "message"}``."""
        return decode_frames(bytes(self.body))

    def sse_data(self) -> list[Any]:
        """The JSON of each ``data:`` line of an event stream (lines that are not JSON skipped)."""
        values = []
        for line in bytes(self.body).decode("utf-8", "replace").splitlines():
            if line.startswith("data:"):
                try:
                    values.append(json.loads(line[len("data:") :]))
                except ValueError:
                    continue
        return values

    def messages(self) -> list[Any]:
        """Whatever JSON the body carried: its frames, its events, or the one document."""
        if self.content_type.startswith(CONNECT_TYPE):
            return [frame["message"] for frame in self.frames()]
        if self.content_type == SSE_TYPE:
            return self.sse_data()
        data = self.response_json()
        return [] if data is None else [data]


def decode_frames(raw: bytes) -> list[dict[str, Any]]:
    """The whole Connect frames at the start of ``raw`` (none when it is not Connect)."""
    try:
        return [{"flags": f.flags, "message": f.message} for f in FrameDecoder().feed(raw)]
    except FrameError:
        return []


class Recorder:
    """The exchanges of one doctor walk, each tagged with the step that made it."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.step = ""

    def begin(self, request: requests.PreparedRequest) -> Exchange:
        body = request.body
        if body is None:
            body = b""
        elif not isinstance(body, (bytes, str)):
            body = None  # a file or generator the adapter streams: not shown
        exchange = Exchange(
            step=self.step,
            method=str(request.method),
            url=str(request.url),
            request_headers=dict(request.headers),
            request_body=body,
        )
        self.touch(exchange)
        self.exchanges.append(exchange)
        return exchange

    def touch(self, exchange: Exchange) -> None:
        """Note that the current step is sending or reading ``exchange``."""
        if self.step not in exchange.steps:
            exchange.steps.append(self.step)

    def touched(self, step: str) -> list[Exchange]:
        """The exchanges ``step`` sent or read from (a stream opened earlier counts too)."""
        return [exchange for exchange in self.exchanges if step in exchange.steps]


class RecordingAdapter(BaseAdapter):
    """Sends through the adapter the product mounted, and records the exchange."""

    def __init__(self, inner: BaseAdapter, recorder: Recorder) -> None:
        super().__init__()
        self.inner = inner
        self.recorder = recorder

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        exchange = self.recorder.begin(request)
        try:
            response = self.inner.send(request, **kwargs)
        except requests.RequestException as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            raise
        exchange.status = response.status_code
        exchange.response_headers = dict(response.headers)
        response.raw = TeeRaw(response.raw, exchange, self.recorder)
        return response

    def close(self) -> None:
        self.inner.close()


class TeeRaw:
    """A urllib3 response that copies every (decoded) piece read into the exchange."""

    # A chunked body may be read straight from the socket beneath urllib3 (upstream/chunked.py)
    # when the response says it is chunked; saying it is not keeps every read in ``stream()``,
    # where the tee sees it.
    chunked = False

    def __init__(self, raw: Any, exchange: Exchange, recorder: Recorder) -> None:
        self._raw = raw
        self._exchange = exchange
        self._recorder = recorder

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        try:
            for piece in self._raw.stream(*args, **kwargs):
                self._recorder.touch(self._exchange)
                self._exchange.body += piece
                yield piece
        except Exception as exc:  # recorded, then raised on unchanged
            self._exchange.error = f"{type(exc).__name__}: {exc}"
            raise

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        piece = self._raw.read(*args, **kwargs)
        self._recorder.touch(self._exchange)
        self._exchange.body += piece or b""
        return piece

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def record_session(http: requests.Session, recorder: Recorder) -> None:
    """Route every request of ``http`` through a recorder, keeping its mounted adapters."""
    for prefix, adapter in list(http.adapters.items()):
        if not isinstance(adapter, RecordingAdapter):
            http.mount(prefix, RecordingAdapter(adapter, recorder))
