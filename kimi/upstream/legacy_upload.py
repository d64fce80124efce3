"""The legacy backend's upload flow: pre-sign, PUT the bytes, register, wait until parsed.

The bytes stream from the source (``FileSource``) to the pre-signed URL; nothing holds a whole
file. The file's id then goes into ``refs`` and its object into ``refs_file`` of the completion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from ..errors import UpstreamError
from ..files.sources import FileSource
from ..settings import Settings
from .base import Session
from .file_errors import about_file
from .http import raise_for_status, translate_transport_errors
from .parse_wait import poll_until_ready

PRESIGN_PATH = "/api/pre-sign-url"
FILE_PATH = "/api/file"
PARSE_PATH = "/api/file/parse_process"
READY_STATUSES = frozenset({"initialized", "parsed"})
PARSE_TIMEOUT_MS = 120_000

# (method, path, session, what, json=...) -> the answer's JSON object
Request = Callable[..., dict[str, Any]]


class LegacyUploader:
    """Uploads a turn's files for one account and chat; returns what the completion cites."""

    def __init__(self, http: requests.Session, settings: Settings, request: Request) -> None:
        self.http = http
        self.settings = settings
        self.request = request

    def upload(self, session: Session, chat_id: str, source: FileSource) -> dict[str, Any]:
        """The registered file object, ready to be cited (its ``id`` goes into ``refs``)."""
        with about_file(source.name, "uploading"):
            signed = self.request(
                "POST",
                PRESIGN_PATH,
                session,
                f"preparing the upload of {source.name}",
                json={"action": source.kind, "name": source.name},
            )
            self._put(signed, source)
            registration = _registration(signed, source, chat_id)
        with about_file(source.name, "waiting for Kimi to read"):
            registered = self._wait_until_ready(session, registration, source.name)
            if source.kind == "file":
                self._wait_until_parsed(session, registered["id"], source.name)
        return registered

    def _put(self, signed: dict[str, Any], source: FileSource) -> None:
        url = signed.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UpstreamError(f"Kimi gave no upload URL for {source.name}.")
        with translate_transport_errors(f"uploading {source.name}"):
            # No Authorization: the URL is pre-signed, and the user's token stays with Kimi.
            response = self.http.put(
                url,
                data=source.reader(),
                headers={"Content-Type": source.content_type},
                timeout=self.settings.timeout,
            )
        raise_for_status(response, self.settings.cooldown_seconds)

    def _wait_until_ready(
        self, session: Session, registration: dict[str, Any], name: str
    ) -> dict[str, Any]:
        def poll() -> dict[str, Any] | None:
            answer = self.request(
                "POST", FILE_PATH, session, f"registering {name}", json=registration
            )
            return answer if answer.get("status") in READY_STATUSES else None

        registered = self._poll(poll, name)
        if not registered.get("id"):
            raise UpstreamError(f"Kimi registered {name} without an id.")
        return registered

    def _wait_until_parsed(self, session: Session, file_id: str, name: str) -> None:
        def poll() -> dict[str, Any] | None:
            answer = self.request(
                "POST",
                PARSE_PATH,
                session,
                f"waiting for {name} to be read",
                json={"ids": [file_id], "timeout": PARSE_TIMEOUT_MS},
            )
            return answer if answer.get("status", "parsed") == "parsed" else None

        self._poll(poll, name)

    def _poll(self, attempt: Callable[[], dict[str, Any] | None], name: str) -> dict[str, Any]:
        return poll_until_ready(attempt, name, self.settings.file_parse_timeout)


def _registration(signed: dict[str, Any], source: FileSource, chat_id: str) -> dict[str, Any]:
    if source.kind == "image":
        return {"type": "image", "file_id": signed.get("file_id", ""), "name": source.name}
    return {
        "type": "file",
        "name": source.name,
        "object_name": signed.get("object_name", ""),
        "file_id": "",
        "chat_id": chat_id,
    }
