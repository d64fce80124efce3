"""Decode ``data:`` URLs (RFC 2397) that users put in chat messages instead of a link.

Base64 payloads are validated strictly (whitespace and newlines are tolerated, anything else
outside the base64 alphabet is an error). A payload without ``;base64`` is accepted as
percent-encoded bytes, as RFC 2397 defines it (``data:text/plain,hello%20world``).

A payload may be as large as the file limit (100 MB by default), so it is decoded piece by
piece (``DataUrl.chunks``) straight out of the URL string: no copy of the whole payload, and no
whole decoded file unless the caller joins the pieces (``parse_data_url``, for small files).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from ..errors import BadRequest

__all__ = ["DataFile", "DataUrl", "open_data_url", "parse_data_url"]

# RFC 2397: a missing media type means "text/plain;charset=US-ASCII".
DEFAULT_MEDIA_TYPE = "text/plain"
# Characters of the payload decoded at a time: a multiple of 4, so base64 pieces need no carry
# unless whitespace or escapes shift them.
PIECE_CHARS = 256 * 1024
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_FILENAME_PARAMS = ("filename", "name")
_PREVIEW_CHARS = 40
# Wrapped base64 carries these; they are not counted when the size is checked up front.
_ASCII_WHITESPACE = " \t\n\r\f\v"
_ESCAPE_CHARS = 3  # "%XX"

AllowedTypes = Callable[[str], bool] | Collection[str] | None


@dataclass(frozen=True)
class DataFile:
    """A file decoded from a ``data:`` URL."""

    content_type: str
    data: bytes
    filename: str | None = None
    charset: str | None = None


@dataclass(frozen=True)
class DataUrl:
    """A ``data:`` URL whose header was checked; its payload is decoded on demand."""

    content_type: str
    filename: str | None
    charset: str | None
    url: str
    payload_start: int
    is_base64: bool
    max_bytes: int

    def chunks(self, piece_chars: int = PIECE_CHARS) -> Iterator[bytes]:
        """The decoded bytes in pieces; ``BadRequest`` once they pass ``max_bytes`` or when the
        payload turns out malformed (which may be after some pieces were yielded)."""
        pieces = _payload_pieces(self.url, self.payload_start, piece_chars)
        decoded = _base64_chunks(pieces) if self.is_base64 else _percent_chunks(pieces)
        total = 0
        for chunk in decoded:
            total += len(chunk)
            if total > self.max_bytes:
                raise _too_large(self.max_bytes)
            yield chunk


def open_data_url(url: str, max_bytes: int, allowed_types: AllowedTypes = None) -> DataUrl:
    """Check ``data:<mime>[;param...][;base64],<payload>`` without decoding its payload.

    ``allowed_types`` is a set of media types or a predicate over one; ``None`` allows any.
    A base64 payload too long for ``max_bytes`` is refused here, before any decoding. Every
    problem is a ``BadRequest`` whose message says what is wrong with the URL.
    """
    header, payload_start = _split_data_url(url)
    content_type, params, is_base64 = _parse_header(header)
    if not _type_allowed(content_type, allowed_types):
        raise BadRequest(
            f"Files of type {content_type} are not supported in a data URL.",
            code="unsupported_file_type",
        )
    if is_base64 and _base64_length(url, payload_start) > 4 * -(-max_bytes // 3):
        raise _too_large(max_bytes)
    filename = next((params[key] for key in _FILENAME_PARAMS if params.get(key)), None)
    charset = params.get("charset") or None
    return DataUrl(content_type, filename, charset, url, payload_start, is_base64, max_bytes)


def parse_data_url(url: str, max_bytes: int, allowed_types: AllowedTypes = None) -> DataFile:
    """Decode a ``data:`` URL whole, at most ``max_bytes`` decoded (see ``open_data_url``)."""
    opened = open_data_url(url, max_bytes, allowed_types)
    data = b"".join(opened.chunks())
    return DataFile(opened.content_type, data, opened.filename, charset=opened.charset)


def _split_data_url(url: str) -> tuple[str, int]:
    if not isinstance(url, str) or not url[:5].lower() == "data:":
        preview = str(url)[:_PREVIEW_CHARS]
        raise BadRequest(f"Expected a data URL starting with 'data:', got {preview!r}.")
    comma = url.find(",", 5)
    if comma < 0:
        raise BadRequest("The data URL has no ',' between its media type and its data.")
    return url[5:comma], comma + 1


def _parse_header(header: str) -> tuple[str, dict[str, str], bool]:
    media_type, *raw_params = header.split(";")
    media_type = media_type.strip().lower() or DEFAULT_MEDIA_TYPE
    if not _MEDIA_TYPE.match(media_type):
        raise BadRequest(f"The data URL's media type {media_type[:_PREVIEW_CHARS]!r} is invalid.")
    is_base64 = False
    params: dict[str, str] = {}
    for raw in raw_params:
        name, equals, value = raw.strip().partition("=")
        if not equals and name.lower() == "base64":
            is_base64 = True
        elif equals:
            params[name.strip().lower()] = unquote(value.strip().strip('"'))
    return media_type, params, is_base64


def _type_allowed(content_type: str, allowed_types: AllowedTypes) -> bool:
    if allowed_types is None:
        return True
    if callable(allowed_types):
        return bool(allowed_types(content_type))
    return content_type in allowed_types


def _base64_length(url: str, start: int) -> int:
    """The payload's base64 characters without whitespace (which carries no data), counted
    without copying the payload whole."""
    if url.find("%", start) < 0:
        blank = sum(url.count(char, start) for char in _ASCII_WHITESPACE)
        return len(url) - start - blank
    # Some clients percent-encode '+', '/', '=' and even line breaks: count what unescaping
    # leaves, one piece at a time.
    pieces = _payload_pieces(url, start, PIECE_CHARS)
    return sum(len("".join(unquote(piece).split())) for piece in pieces)


def _payload_pieces(url: str, start: int, piece_chars: int) -> Iterator[str]:
    """The payload in slices, percent-escapes kept whole: an escape cut by a slice's end
    moves to the next slice."""
    carry = ""
    for offset in range(start, len(url), piece_chars):
        piece = carry + url[offset : offset + piece_chars]
        cut = piece.find("%", len(piece) - (_ESCAPE_CHARS - 1))
        piece, carry = (piece, "") if cut < 0 else (piece[:cut], piece[cut:])
        yield piece
    if carry:
        yield carry


def _base64_chunks(pieces: Iterator[str]) -> Iterator[bytes]:
    carry = ""
    padded = False
    for piece in pieces:
        if "%" in piece:
            piece = unquote(piece)
        compact = carry + "".join(piece.split())
        whole = len(compact) - len(compact) % 4
        block, carry = compact[:whole], compact[whole:]
        if not block:
            continue
        if padded:  # '=' may only end the payload
            raise _malformed("data continues after its '=' padding")
        padded = block.endswith("=")
        yield _b64decode(block)
    if carry:
        yield _b64decode(carry)  # not a multiple of 4 characters: always an error


def _b64decode(block: str) -> bytes:
    try:
        return base64.b64decode(block, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(str(exc)) from exc


def _percent_chunks(pieces: Iterator[str]) -> Iterator[bytes]:
    for piece in pieces:
        if piece:
            yield unquote_to_bytes(piece)


def _malformed(detail: str) -> BadRequest:
    return BadRequest(f"The data URL's base64 data is malformed: {detail}.")


def _too_large(max_bytes: int) -> BadRequest:
    return BadRequest(
        f"The file in the data URL is larger than the limit of {max_bytes} bytes.",
        code="file_too_large",
    )
