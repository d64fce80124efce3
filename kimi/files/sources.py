"""One attached file, opened for reading: from a ``data:`` URL or fetched safely from a URL.

Opening checks everything that can be checked before Kimi is called (address, status, size,
base64) and reads the whole file into a spool (a temporary file, in memory only up to a few
MB), so a bad or slow file is a 400 with nothing sent upstream, and the source's time is over
before Kimi's begins. Nothing holds a whole file in memory: a ``data:`` URL is decoded into the
spool piece by piece, a URL's body is streamed into it within the size limit.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from ..history import FileRef
from ..settings import Settings
from .data_url import open_data_url
from .fetch import CHUNK_SIZE, SafeFetcher
from .fetch_budget import KB, FetchLimits

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


def open_sources(refs: Iterable[FileRef], settings: Settings) -> tuple[FileSource, ...]:
    """Every file opened (checked, fetched into its spool), or none left open on an error."""
    sources: list[FileSource] = []
    try:
        for ref in refs:
            sources.append(FileSource(ref, settings))
    except BaseException:
        close_sources(sources)
        raise
    return tuple(sources)


def close_sources(sources: Iterable[FileSource]) -> None:
    """Free the spools of ``sources``."""
    for source in sources:
        source.close()


class FileSource:
    """An attached file: ``name``, ``content_type`` (the media type alone), ``charset`` (as
    declared, if it was), ``kind`` ("file"/"image"), ``length``, ``sha256`` (hex, of the bytes).

    ``reader()`` may be called more than once (a turn retried on another account uploads
    again): each reads the spool from its start.
    """

    def __init__(self, ref: FileRef, settings: Settings) -> None:
        self.ref = ref
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
        self._digest = hashlib.sha256()
        try:
            if ref.url.startswith("data:"):
                content_type, filename = self._decode(ref.url, settings)
            else:
                content_type, filename = self._fetch(ref.url, settings)
        except BaseException:
            self._spool.close()
            raise
        self.length = self._spool.tell()
        # Hashed as it was spooled: what the web upload cache knows a file by, at no extra pass.
        self.sha256 = self._digest.hexdigest()
        self.content_type = content_type
        self.name = ref.filename or filename or ref.name
        self.kind = "image" if ref.kind == "image" or content_type.startswith("image/") else "file"

    def reader(self) -> ChunkReader:
        """A file-like view of the bytes, with ``len()``."""
        return ChunkReader(self._chunks(), self.length)

    def file(self) -> IO[bytes]:
        """The spool itself, at its start: a real file once ``fileno()`` is asked of it."""
        self._spool.seek(0)
        return self._spool

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _decode(self, url: str, settings: Settings) -> tuple[str, str | None]:
        opened = open_data_url(url, settings.max_file_bytes, is_known_file_type)
        self.charset = opened.charset
        self._write(opened.chunks())
        return opened.content_type, opened.filename

    def _fetch(self, url: str, settings: Settings) -> tuple[str, str | None]:
        limits = FetchLimits(
            total_seconds=settings.file_fetch_timeout,
            min_bytes_per_second=settings.file_fetch_min_kbps * KB,
            rate_window_seconds=settings.file_fetch_rate_window,
        )
        with (
            SafeFetcher(
                settings.max_file_bytes,
                timeout=settings.timeout,
                allow_private=settings.allow_private_file_urls,
                limits=limits,
            ) as fetcher,
            fetcher.open(url, self.ref.filename or self.ref.name) as fetched,
        ):
            self.charset = fetched.charset
            # Stops with a 400 past the size limit, the deadline or under the minimum rate.
            self._write(fetched.iter_chunks())
            return fetched.content_type, fetched.filename

    def _write(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self._digest.update(chunk)
            self._spool.write(chunk)

    def _chunks(self) -> Iterator[bytes]:
        self._spool.seek(0)
        yield from iter(lambda: self._spool.read(CHUNK_SIZE), b"")


class ChunkReader(io.RawIOBase):
    """A read-once binary stream over chunks. ``len()`` lets ``requests`` send a
    Content-Length instead of chunked encoding, which upload URLs may refuse."""

    def __init__(self, chunks: Iterator[bytes], length: int | None) -> None:
        self._chunks = chunks
        self._length = length
        self._pending = memoryview(b"")
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
        # A view, never a slice: slicing a large chunk would copy its rest on every read.
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk).cast("B")
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self._position += size
        return size
