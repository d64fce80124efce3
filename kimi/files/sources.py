"""One attached file, opened for reading: from a ``data:`` URL or fetched safely from a URL.

Opening checks everything that can be checked before Kimi is called (address, status, size,
base64), so a bad file is a 400 with nothing sent upstream. The bytes are then streamed, never
held whole: a source of known length streams straight from the URL, one of unknown length is
spooled to a temporary file (in memory only up to a few MB) within the size limit.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import IO

from ..history import FileRef
from ..settings import Settings
from .data_url import parse_data_url
from .fetch import CHUNK_SIZE, FetchedFile, SafeFetcher

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/json",
        "application/xml",
        "application/epub+zip",
    }
)
OFFICE_PREFIX = "application/vnd.openxmlformats-officedocument."


def is_known_file_type(content_type: str) -> bool:
    """A ``data:`` URL's type that Kimi can read: text, common documents, common images."""
    return (
        content_type.startswith("text/")
        or content_type.startswith(OFFICE_PREFIX)
        or content_type in DOCUMENT_TYPES
        or content_type in IMAGE_TYPES
    )


class FileSource:
    """An attached file: ``name``, ``content_type`` (the media type alone), ``charset`` (as
    declared, if it was), ``kind`` ("file"/"image"), ``length``.

    ``reader()`` may be called more than once (a turn retried on another account uploads
    again); a URL whose first body was consumed is fetched again.
    """

    def __init__(self, ref: FileRef, settings: Settings) -> None:
        self.ref = ref
        self._data: bytes | None = None
        self._spool: IO[bytes] | None = None
        self._fetcher: SafeFetcher | None = None
        self._fetched: FetchedFile | None = None
        if ref.url.startswith("data:"):
            decoded = parse_data_url(ref.url, settings.max_file_bytes, is_known_file_type)
            self._data = decoded.data
            self.charset = decoded.charset
            content_type, filename, self.length = (
                decoded.content_type,
                decoded.filename,
                len(decoded.data),
            )
        else:
            self._fetcher = SafeFetcher(
                settings.max_file_bytes,
                timeout=settings.timeout,
                allow_private=settings.allow_private_file_urls,
            )
            self._fetched = self._fetcher.open(ref.url)
            self.charset = self._fetched.charset
            content_type, filename, self.length = (
                self._fetched.content_type,
                self._fetched.filename,
                self._fetched.length,
            )
            if self.length is None:
                self._spool_body()
        self.content_type = content_type
        self.name = ref.filename or filename or ref.name
        self.kind = "image" if ref.kind == "image" or content_type.startswith("image/") else "file"

    def reader(self) -> ChunkReader:
        """A file-like view of the bytes, with ``len()`` when the length is known."""
        return ChunkReader(self._chunks(), self.length)

    def close(self) -> None:
        for resource in (self._fetched, self._spool, self._fetcher):
            if resource is not None:
                resource.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _chunks(self) -> Iterator[bytes]:
        if self._data is not None:
            yield self._data
        elif self._spool is not None:
            self._spool.seek(0)
            yield from iter(lambda: self._spool.read(CHUNK_SIZE), b"")
        else:
            fetched, self._fetched = self._fetched, None
            yield from (fetched or self._fetcher.open(self.ref.url)).iter_chunks()

    def _spool_body(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
        for chunk in self._fetched.iter_chunks():  # stops with a 400 past the size limit
            self._spool.write(chunk)
        self.length = self._spool.tell()
        self._fetched = None


class ChunkReader(io.RawIOBase):
    """A read-once binary stream over chunks. ``len()`` lets ``requests`` send a
    Content-Length instead of chunked encoding, which upload URLs may refuse."""

    def __init__(self, chunks: Iterator[bytes], length: int | None) -> None:
        self._chunks = chunks
        self._length = length
        self._buffer = b""
        self._position = 0

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown")
        return self._length

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        # requests subtracts this from len(): without it, it would fall back to chunked.
        return self._position

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self._position += size
        return size
