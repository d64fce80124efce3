"""Decode ``data:`` URLs (RFC 2397) that users put in chat messages instead of a link.

Base64 payloads are validated strictly (whitespace and newlines are tolerated, anything else
outside the base64 alphabet is an error). A payload without ``;base64`` is accepted as
percent-encoded bytes, as RFC 2397 defines it (``data:text/plain,hello%20world``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from ..errors import BadRequest

__all__ = ["DataFile", "parse_data_url"]

# RFC 2397: a missing media type means "text/plain;charset=US-ASCII".
DEFAULT_MEDIA_TYPE = "text/plain"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_FILENAME_PARAMS = ("filename", "name")
_PREVIEW_CHARS = 40

AllowedTypes = Callable[[str], bool] | Collection[str] | None


@dataclass(frozen=True)
class DataFile:
    """A file decoded from a ``data:`` URL."""

    content_type: str
    data: bytes
    filename: str | None = None
    charset: str | None = None


def parse_data_url(url: str, max_bytes: int, allowed_types: AllowedTypes = None) -> DataFile:
    """Decode ``data:<mime>[;param...][;base64],<payload>``, at most ``max_bytes`` decoded.

    ``allowed_types`` is a set of media types or a predicate over one; ``None`` allows any.
    Every problem is a ``BadRequest`` whose message says what is wrong with the URL.
    """
    header, payload = _split_data_url(url)
    content_type, params, is_base64 = _parse_header(header)
    if not _type_allowed(content_type, allowed_types):
        raise BadRequest(
            f"Files of type {content_type} are not supported in a data URL.",
            code="unsupported_file_type",
        )
    data = _decode_base64(payload, max_bytes) if is_base64 else unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    filename = next((params[key] for key in _FILENAME_PARAMS if params.get(key)), None)
    return DataFile(content_type, data, filename, charset=params.get("charset") or None)


def _split_data_url(url: str) -> tuple[str, str]:
    if not isinstance(url, str) or not url[:5].lower() == "data:":
        preview = str(url)[:_PREVIEW_CHARS]
        raise BadRequest(f"Expected a data URL starting with 'data:', got {preview!r}.")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise BadRequest("The data URL has no ',' between its media type and its data.")
    return header, payload


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


def _decode_base64(payload: str, max_bytes: int) -> bytes:
    # Some clients percent-encode '+', '/' and '='; whitespace and line breaks are common in
    # wrapped base64 and carry no data.
    if "%" in payload:
        payload = unquote(payload)
    compact = "".join(payload.split())
    # Reject on the encoded length, before allocating the decoded bytes.
    if len(compact) > 4 * -(-max_bytes // 3):
        raise _too_large(max_bytes)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"The data URL's base64 data is malformed: {exc}.") from exc


def _too_large(max_bytes: int) -> BadRequest:
    return BadRequest(
        f"The file in the data URL is larger than the limit of {max_bytes} bytes.",
        code="file_too_large",
    )
