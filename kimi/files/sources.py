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
import mimetypes
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from ..errors import BadRequest
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
# Types that say nothing about the file ("some bytes"): its name's extension says more.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Extensions Python's built-in table lacks (it is used without the machine's mime.types, so the
# answer is the same everywhere).
TYPES_BY_EXTENSION = {
    ".docx": OFFICE_PREFIX + "wordprocessingml.document",
    ".xlsx": OFFICE_PREFIX + "spreadsheetml.sheet",
    ".pptx": OFFICE_PREFIX + "presentationml.presentation",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".epub": "application/epub+zip",
}
# Names clients use for common types that are not the registered ones.
TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_BUILT_IN_TYPES = mimetypes.MimeTypes()


def is_known_file_type(content_type: str) -> bool:
    """A ``data:`` URL's type that Kimi can read: text, common documents, common images."""
    return (
        content_type.startswith("text/")
        or content_type.startswith(OFFICE_PREFIX)
        or content_type in DOCUMENT_TYPES
        or content_type in IMAGE_TYPES
    )


def refined_type(content_type: str, filename: str | None) -> str:
    """``content_type`` by its registered name (``image/jpg`` is ``image/jpeg``), or when it is
    generic (``application/octet-stream``: plain base64 in a Responses ``file_data``, a server
    that does not say) the type the file's name implies."""
    content_type = TYPE_ALIASES.get(content_type, content_type)
    if content_type not in GENERIC_TYPES or not filename:
        return content_type
    extension = os.path.splitext(filename)[1].lower()
    guessed = TYPES_BY_EXTENSION.get(extension)
    guessed = guessed or _BUILT_IN_TYPES.guess_type(filename, strict=False)[0]
    return guessed or content_type


def with_extension(name: str, content_type: str) -> str:
    """``name`` with the extension of its type when it has none (a ``data:`` URL's file is
    "image"): Kimi tells a file's kind by its name's extension too."""
    if os.path.splitext(name)[1] or content_type in GENERIC_TYPES:
        return name
    extension = next((e for e, t in TYPES_BY_EXTENSION.items() if t == content_type), None)
    extension = extension or _BUILT_IN_TYPES.guess_extension(content_type, strict=False)
    return name + extension if extension else name


def describe(ref: FileRef, position: tuple[int, int] | None = None) -> str:
    """How an error names an attached file: its name, or where it is when it has none."""
    kind = "image" if ref.kind == "image" else "file"
    is_data = ref.url.startswith("data:")
    label = f"Attached {kind} {ref.name!r}" if ref.filename or not is_data else f"Attached {kind}"
    where = ["a data: URL"] if is_data else []
    if position and position[1] > 1:
        where.append(f"number {position[0]} of the {position[1]} attached")
    return f"{label} ({', '.join(where)})" if where else label


def open_sources(refs: Iterable[FileRef], settings: Settings) -> tuple[FileSource, ...]:
    """Every file opened (checked, fetched into its spool), or none left open on an error."""
    refs = tuple(refs)
    sources: list[FileSource] = []
    try:
        for index, ref in enumerate(refs, 1):
            sources.append(FileSource(ref, settings, position=(index, len(refs))))
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

    def __init__(
        self, ref: FileRef, settings: Settings, *, position: tuple[int, int] | None = None
    ) -> None:
        self.ref = ref
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
        self._digest = hashlib.sha256()
        try:
            if ref.url.startswith("data:"):
                content_type, filename = self._decode(ref.url, settings)
            else:
                content_type, filename = self._fetch(ref.url, settings)
        except BadRequest as exc:
            self._spool.close()
            _name_the_file(exc, ref, position)
            raise
        except BaseException:
            self._spool.close()
            raise
        self.length = self._spool.tell()
        # Hashed as it was spooled: what the web upload cache knows a file by, at no extra pass.
        self.sha256 = self._digest.hexdigest()
        name = ref.filename or filename or ref.name
        self.content_type = refined_type(content_type, name)
        self.name = with_extension(name, self.content_type)
        is_image = ref.kind == "image" or self.content_type.startswith("image/")
        self.kind = "image" if is_image else "file"

    def reader(self) -> ChunkReader:
        """A file-like view of the bytes, with ``len()``."""
        return ChunkReader(self.chunks(), self.length)

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
        opened = open_data_url(url, settings.max_file_bytes)
        # Checked by the type the name implies: plain base64 arrives as application/octet-stream.
        content_type = refined_type(opened.content_type, self.ref.filename or opened.filename)
        if not is_known_file_type(content_type):
            raise BadRequest(
                f"Files of type {content_type} are not supported in a data URL.",
                code="unsupported_file_type",
            )
        self.charset = opened.charset
        self._write(opened.chunks())
        return content_type, opened.filename

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

    def chunks(self) -> Iterator[bytes]:
        """The bytes from the start, in pieces of ``CHUNK_SIZE``."""
        self._spool.seek(0)
        yield from iter(lambda: self._spool.read(CHUNK_SIZE), b"")


def _name_the_file(exc: BadRequest, ref: FileRef, position: tuple[int, int] | None) -> None:
    """Put the file ``exc`` is about first in its message, unless the message names it."""
    if ref.filename and repr(ref.filename) in exc.message:
        return
    if not ref.url.startswith("data:") and repr(ref.name) in exc.message:
        return
    exc.message = f"{describe(ref, position)}: {exc.message}"
    exc.args = (exc.message,)


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
