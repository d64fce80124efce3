"""The ``web`` backend's upload flow: a multipart upload, then parse progress until read.

1. ``POST {host}/apiv2-files/file/upload``: ``multipart/form-data`` with one field ``file``,
   streamed from the file's spool (never held whole) with a Content-Length.
2. ``POST .../GetFileParseProgress`` ``{"file_ids": [id]}`` (plain JSON, Connect-Protocol-Version
   1) until the file's status is ``PROCESS_STATUS_SUCCESS`` (a 502 when ``..._FAILED``, a 504
   past ``FILE_PARSE_TIMEOUT``).

The file's id then goes into the Chat message as a ``file`` block. ``UploadedFiles`` remembers
ids by account and content, so a file sent again by the same account is not uploaded again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import (
    UpstreamError,
)
from ..files.sources import ChunkReader, FileSource
from ..settings import Settings
from ..store import StateStore
from .base import Session
from .file_errors import about_file
from .http import json_body, translate_transport_errors
from .parse_wait import POLL_SECONDS, poll_until_ready

log = logging.getLogger(__name__)

UPLOAD_PATH = "/apiv2-files/file/upload"
PARSE_PROGRESS_PATH = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
UPLOAD_FIELD = "file"
PARSE_SUCCESS = "PROCESS_STATUS_SUCCESS"
PARSE_FAILED = "PROCESS_STATUS_FAILED"
CACHE_KEY_PREFIX = "webfile:"

# (session, content type) -> the headers of an authenticated call
Headers = Callable[[Session, str], dict[str, str]]
# (session, path, JSON payload, what) -> the answer's JSON object: the adapter's plain JSON call
Call = Callable[[Session, str, dict, str], dict[str, Any]]


@dataclass(frozen=True)
class TurnFiles:
    """The file ids of a turn's files, and whether any was remembered rather than just sent."""

    ids: tuple[str, ...]
    remembered: bool


class WebUploader:
    """Uploads files for one account and waits until Kimi has read them."""

    def __init__(
        self,
        http: requests.Session,
        settings: Settings,
        headers: Headers,
        call: Call,
        cache: UploadedFiles | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.http = http
        self.settings = settings
        self.headers = headers
        self.call = call
        self.cache = cache
        self.poll_seconds = poll_seconds

    def upload(self, session: Session, source: FileSource) -> str:
        """Upload ``source`` and wait until Kimi has parsed it; its file id."""
        with about_file(source.name, "uploading"):
            file_id = self._send(session, source)
        with about_file(source.name, "waiting for Kimi to read"):
            self._wait_until_parsed(session, file_id, source.name)
        return file_id

    def file_ids(self, session: Session, sources: tuple[FileSource, ...]) -> TurnFiles:
        """The ids of ``sources`` on this account: remembered from earlier uploads, or uploaded."""
        ids, remembered = [], False
        for source in sources:
            cached = self.cache.get(session, source.sha256) if self.cache else None
            if cached:
                log.info(
                    "%s was uploaded by this account before: not sending it again", source.name
                )
            remembered = remembered or bool(cached)
            ids.append(cached or self._upload_and_remember(session, source))
        return TurnFiles(tuple(ids), remembered)

    def forget(self, session: Session, sources: tuple[FileSource, ...]) -> None:
        """Drop the remembered ids of ``sources`` (Kimi no longer knows one of them)."""
        for source in sources if self.cache else ():
            self.cache.delete(session, source.sha256)

    def _upload_and_remember(self, session: Session, source: FileSource) -> str:
        file_id = self.upload(session, source)
        if self.cache:
            self.cache.put(session, source.sha256, file_id)
        return file_id

    def _send(self, session: Session, source: FileSource) -> str:
        what = f"uploading {source.name}"
        body = MultipartBody(source)
        with translate_transport_errors(what):
            response = self.http.post(
                self.settings.base_url + UPLOAD_PATH,
                data=body.reader(),
                headers=self.headers(session, body.content_type),
                timeout=self.settings.timeout,
            )
        answer = json_body(response, what, self.settings.cooldown_seconds)
        uploaded = answer.get("file") if isinstance(answer.get("file"), dict) else {}
        file_id = uploaded.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise UpstreamError(f"Kimi took {source.name} but gave it no file id.")
        return file_id

    def _wait_until_parsed(self, session: Session, file_id: str, name: str) -> None:
        def poll() -> bool | None:
            status = self._parse_status(session, file_id, name)
            if status == PARSE_FAILED:
                raise UpstreamError(
                    f"Kimi could not read {name} (its parse failed); check that the file is "
                    "intact and of a kind Kimi reads.",
                    code="file_parse_failed",
                )
            return True if status == PARSE_SUCCESS else None

        poll_until_ready(poll, name, self.settings.file_parse_timeout, self.poll_seconds)

    def _parse_status(self, session: Session, file_id: str, name: str) -> str:
        payload = {"file_ids": [file_id]}
        answer = self.call(session, PARSE_PROGRESS_PATH, payload, f"waiting for {name} to be read")
        return progress_status(answer, file_id)


def progress_status(answer: dict[str, Any], file_id: str) -> str:
    """The status ``GetFileParseProgress`` reports for ``file_id`` ("" while it names none)."""
    progresses = answer.get("progresses")
    for entry in progresses if isinstance(progresses, list) else []:
        if isinstance(entry, dict) and entry.get("fileId", entry.get("file_id")) == file_id:
            return str(entry.get("status") or "")
    return ""


class MultipartBody:
    """One file as a ``multipart/form-data`` body that streams, with its exact length known.

    ``requests`` builds multipart bodies in memory; this one reads the file's spool piece by
    piece between a fixed head and tail, so Content-Length is known and nothing is held whole.
    """

    def __init__(self, source: FileSource, boundary: str | None = None) -> None:
        self.source = source
        self.boundary = boundary or f"----KimiFreeApi{secrets.token_hex(16)}"
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{UPLOAD_FIELD}"; '
            f'filename="{quoted_filename(source.name)}"\r\n'
            f"Content-Type: {source.content_type}\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.source.length + len(self.tail)

    def reader(self) -> ChunkReader:
        """A file-like read of the whole body, with ``len()`` (sent as Content-Length)."""
        return ChunkReader(self.chunks(), len(self))

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from self.source.chunks()
        yield self.tail


def quoted_filename(name: str) -> str:
    """``name`` as browsers put it in a quoted ``filename``: UTF-8, with quote and line breaks
    percent-escaped so the name cannot end the header early."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class UploadedFiles:
    """File ids by account (Kimi user id) and content hash, in the state store, for ``ttl`` s.

    Kimi keeps a user's files; sending the same bytes again refers to the stored file instead.
    An account without a user id is never cached: its files could not be told apart.
    """

    def __init__(self, store: StateStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    def get(self, session: Session, sha256: str) -> str | None:
        key = self._key(session, sha256)
        return self.store.get(key) if key else None

    def put(self, session: Session, sha256: str, file_id: str) -> None:
        key = self._key(session, sha256)
        if key:
            self.store.put(key, file_id, ttl=self.ttl)

    def delete(self, session: Session, sha256: str) -> None:
        key = self._key(session, sha256)
        if key:
            self.store.delete(key)

    @staticmethod
    def _key(session: Session, sha256: str) -> str | None:
        return f"{CACHE_KEY_PREFIX}{session.user_id}:{sha256}" if session.user_id else None
