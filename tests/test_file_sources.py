"""Large files in linear time and bounded memory: ``data:`` URLs decoded piece by piece into
the spool, and ``ChunkReader`` handing out views of its chunks instead of re-slicing them.

Memory is measured with ``tracemalloc`` (what Python allocates while the file goes through),
never with a clock. It counts every thread, so the bounds leave room for a stray allocation
elsewhere and still sit far below what copying the file would take.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import tracemalloc
from collections.abc import Callable
from urllib.parse import quote

import pytest

from kimi.errors import BadRequest
from kimi.files import sources
from kimi.files.data_url import open_data_url, parse_data_url
from kimi.files.sources import ChunkReader, FileSource
from kimi.history import FileRef
from kimi.settings import Settings

MB = 1024 * 1024
SAMPLE = bytes(range(256)) * 3 + b"plain text\r\n\xe4\xb8\xad"


def peak_allocation(work: Callable[[], object]) -> tuple[int, object]:
    """The most memory Python held at once while ``work`` ran, above where it started."""
    gc.collect()  # earlier tests' garbage, collected mid-measure, would count its finalizers
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, result


def drain(reader, read_size: int) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(read_size)
    while count := reader.readinto(buffer):
        digest.update(memoryview(buffer)[:count])
    return digest.hexdigest()


def patterned(size: int) -> bytes:
    block = bytes(range(256)) * 4096
    return (block * (size // len(block) + 1))[:size]


# --- ChunkReader ---------------------------------------------------------------------------


def test_reading_one_huge_chunk_in_small_reads_copies_only_what_is_read():
    data = patterned(16 * MB)
    reader = ChunkReader(iter([data]), len(data))
    peak, digest = peak_allocation(lambda: drain(reader, 64 * 1024))
    assert digest == hashlib.sha256(data).hexdigest()
    # Re-slicing the rest of the chunk on every read would hold about two copies of it (32 MB).
    assert peak < 12 * MB


@pytest.mark.parametrize("read_size", [1, 2, 3, 5, 7, 64])
def test_chunk_reader_returns_every_byte_whatever_the_read_size(read_size: int):
    chunks = [SAMPLE[:5], b"", SAMPLE[5:6], SAMPLE[6:500], SAMPLE[500:]]
    reader = ChunkReader(iter(chunks), len(SAMPLE))
    assert drain(reader, read_size) == hashlib.sha256(SAMPLE).hexdigest()
    assert reader.tell() == len(SAMPLE) == len(reader)


def test_chunk_reader_accepts_bytearray_and_memoryview_chunks():
    reader = ChunkReader(iter([bytearray(b"abc"), memoryview(b"def")]), 6)
    assert reader.read() == b"abcdef"


# --- data: URLs decoded piece by piece -----------------------------------------------------

ENCODED = base64.b64encode(SAMPLE).decode()
WRAPPED = "\r\n".join(ENCODED[i : i + 76] for i in range(0, len(ENCODED), 76))
PAYLOADS = {
    "plain": ENCODED,
    "wrapped": WRAPPED,
    "spaced": " " + " ".join(ENCODED[i : i + 3] for i in range(0, len(ENCODED), 3)) + "\n",
    "percent-encoded": quote(ENCODED, safe=""),
    "percent-encoded-and-wrapped": quote(WRAPPED, safe=""),
}


@pytest.mark.parametrize("piece_chars", range(1, 13))
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_base64_decodes_the_same_whatever_the_piece_size(payload: str, piece_chars: int):
    opened = open_data_url(f"data:application/pdf;base64,{payload}", 10 * MB)
    assert b"".join(opened.chunks(piece_chars)) == SAMPLE


@pytest.mark.parametrize("piece_chars", range(1, 13))
def test_percent_encoded_data_decodes_the_same_whatever_the_piece_size(piece_chars: int):
    text = "naïve 中文 100% [x]"
    url = "data:text/plain;charset=utf-8," + quote(text.encode("utf-8"), safe=" []") + "ü"
    opened = open_data_url(url, 10 * MB)
    assert b"".join(opened.chunks(piece_chars)).decode("utf-8") == text + "ü"


@pytest.mark.parametrize("piece_chars", [1, 2, 3, 4, 5, 8, 1024])
@pytest.mark.parametrize("payload", ["aGVsbG8", "aGVs!G8=", "aGVsbG8=aGVs", "aGVsbG8=\naGVs"])
def test_malformed_base64_is_refused_whatever_the_piece_size(payload: str, piece_chars: int):
    opened = open_data_url(f"data:text/plain;base64,{payload}", MB)
    with pytest.raises(BadRequest, match="base64 data is malformed"):
        b"".join(opened.chunks(piece_chars))


@pytest.mark.parametrize("piece_chars", [1, 7, 1024])
def test_the_size_limit_holds_while_decoding_piece_by_piece(piece_chars: int):
    opened = open_data_url("data:text/plain," + "a" * 101, max_bytes=100)
    with pytest.raises(BadRequest) as caught:
        b"".join(opened.chunks(piece_chars))
    assert caught.value.code == "file_too_large"
    assert parse_data_url("data:text/plain," + "a" * 100, max_bytes=100).data == b"a" * 100


def test_wrapping_and_escapes_do_not_count_against_the_size_limit():
    data = b"\xfb\xff" * 300  # base64 full of '+' and '/', which clients percent-encode
    encoded = base64.b64encode(data).decode()
    wrapped = quote("\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)), safe="")
    assert parse_data_url(f"data:text/plain;base64,{wrapped}", max_bytes=len(data)).data == data


def test_a_large_data_url_reaches_the_spool_in_bounded_memory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sources, "SPOOL_IN_MEMORY_BYTES", MB)
    data = patterned(24 * MB)
    payload = base64.encodebytes(data).decode()  # wrapped in lines, as mail and some SDKs do
    ref = FileRef(f"data:text/plain;name=big.txt;base64,{payload}")
    del payload
    peak, source = peak_allocation(lambda: FileSource(ref, Settings(max_file_mb=32)))
    with source:
        assert (source.name, source.length) == ("big.txt", len(data))
        assert drain(source.reader(), 64 * 1024) == hashlib.sha256(data).hexdigest()
    # Joining the payload without its line breaks, then decoding it whole, held 120 MB at once.
    assert peak < 16 * MB
