"""What the emulated ``web`` backend keeps of uploaded files: who sent what (name, size, SHA-256,
content type, never the bytes) and how far its parse has got.

A parse takes ``parse_seconds`` from the upload (the config's, or a ``parse_slow`` fault's), or
ends in failure (``parse_failed``). Kept apart from ``state`` so the legacy flow's records and
this one's do not mix; ``EmulatorState`` holds one and makes a new one on reset.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

PROCESSING = "PROCESS_STATUS_PROCESSING"
SUCCESS = "PROCESS_STATUS_SUCCESS"
FAILED = "PROCESS_STATUS_FAILED"
IMAGE_TYPE, DOCUMENT_TYPE = "FILE_TYPE_IMAGE", "FILE_TYPE_DOCUMENT"


@dataclass(frozen=True)
class WebUploadReceipt:
    """One multipart upload as it arrived, measured while the body streamed."""

    name: str
    content_type: str
    size: int
    sha256: str
    content_length: str | None  # the request's header as sent
    chunked: bool


@dataclass
class WebFile:
    """An uploaded file of one user's, with its parse outcome planned at upload time."""

    id: str
    user_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    content_length: str | None
    chunked: bool
    uploaded_at: float
    ready_at: float  # time.monotonic() when its parse ends
    fails: bool = False

    @property
    def type(self) -> str:
        return IMAGE_TYPE if self.content_type.startswith("image/") else DOCUMENT_TYPE

    @property
    def ext(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return PROCESSING
        return FAILED if self.fails else SUCCESS


class WebFileStore:
    """Uploaded files by id; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, WebFile] = {}

    def add(
        self, user_id: str, receipt: WebUploadReceipt, parse_seconds: float, fails: bool
    ) -> WebFile:
        """Record an upload; its parse ends ``parse_seconds`` from now, failed if ``fails``."""
        now = time.monotonic()
        web_file = WebFile(
            id=uuid.uuid4().hex[:20],
            user_id=user_id,
            uploaded_at=now,
            ready_at=now + parse_seconds,
            fails=fails,
            **asdict(receipt),
        )
        with self._lock:
            self._files[web_file.id] = web_file
        return web_file

    def owned(self, user_id: str, file_id: str) -> WebFile | None:
        """The user's file with this id (another user's is as unknown as a missing one)."""
        with self._lock:
            web_file = self._files.get(file_id)
        return web_file if web_file and web_file.user_id == user_id else None

    def discard(self, file_id: str) -> None:
        """Forget a file, as Kimi may drop a stored one: a Chat call naming it is refused."""
        with self._lock:
            self._files.pop(file_id, None)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every upload in arrival order, with the status its parse has reached."""
        now = time.monotonic()
        with self._lock:
            files = list(self._files.values())
        return [{**asdict(f), "type": f.type, "status": f.status(now)} for f in files]
