"""A request's JSON body, read within a size limit and checked before any field is looked at.

Three things a hostile body can do that ``json.loads`` alone lets through: be endless (a chunked
body has no Content-Length to refuse up front), nest deep enough to exhaust the interpreter's
stack, and carry lone UTF-16 surrogates (``"\\ud800"``), valid JSON that no UTF-8 encoder, ours or
Kimi's, can write back out.
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain, compress, count
from typing import Any, BinaryIO

from .errors import BadRequest, RequestTooLarge

MAX_JSON_DEPTH = 100  # JSON schemas in tools nest a few dozen levels at the very most
READ_CHUNK_BYTES = 64 * 1024
MAX_KEY_IN_PARAM = 40  # a key quoted in an error's param is cut to this many characters
SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_SOURCE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
DICT_TYPES, LIST_TYPES, STRING_TYPES = frozenset((dict,)), frozenset((list,)), frozenset((str,))


def read_limited(stream: BinaryIO, limit: int) -> bytes:
    """The whole of ``stream``, or ``RequestTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(too_large_message(limit))
        chunks.append(chunk)


def too_large_message(limit: int) -> str:
    return (
        f"The request body is larger than {limit} bytes (MAX_REQUEST_MB); send large files "
        "as http(s) URLs instead of data: URLs."
    )


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of ``raw``; ``BadRequest`` when invalid, non-finite, too deep or not text."""
    if not raw.strip():
        raise BadRequest("The request body must be JSON (Content-Type: application/json).")
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    check_json_value(value, raw)
    return value


def check_json_value(value: Any, raw: bytes | None = None) -> None:
    """Raise ``BadRequest`` for a value nested too deep, or naming a field that holds a lone
    surrogate. ``raw``, the bytes ``value`` was parsed from, lets most bodies skip the walk."""
    deep = raw is None or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    text = raw is None or _may_hold_surrogates(raw)
    if not (deep or text):
        return
    nodes = [value]
    for depth in count():
        types = list(map(type, nodes))
        dicts = list(compress(nodes, map(DICT_TYPES.__contains__, types)))
        lists = list(compress(nodes, map(LIST_TYPES.__contains__, types)))
        if text and _has_surrogate(nodes, types, dicts):
            raise _surrogate(_surrogate_path(value))
        if not (dicts or lists):
            return
        if depth >= MAX_JSON_DEPTH:
            raise _too_deep()
        # One level at a time through C iterators: a body of a million small objects is
        # walked at about the speed json.loads built it, not a Python loop per object.
        nodes = list(chain.from_iterable(map(dict.values, dicts)))
        nodes.extend(chain.from_iterable(lists))


def _has_surrogate(nodes: list[Any], types: list[type], dicts: list[dict]) -> bool:
    strings = compress(nodes, map(STRING_TYPES.__contains__, types))
    keys = chain.from_iterable(dicts)
    return any(map(SURROGATE.search, chain(strings, keys)))


def _surrogate_path(value: Any) -> str:
    """Where a lone surrogate is, as a ``param`` path; a Python walk, so run only once one is
    known to be there."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return path
        elif isinstance(item, (dict, list)):
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and SURROGATE.search(key):
                    return _join(path, key)
                stack.append((child, _join(path, key)))
    return ""


def _may_hold_surrogates(raw: bytes) -> bool:
    """Whether parsing ``raw`` could have made a lone surrogate: a ``\\uD800``-``\\uDFFF``
    escape, UTF-8 bytes of one (``json`` decodes with surrogatepass), or a UTF-16/32 body."""
    return b"\x00" in raw[:4] or SURROGATE_SOURCE.search(raw) is not None


def _join(path: str, key: str | int) -> str:
    """``messages[0].content``: the path a ``param`` names, as ``parse_chat_request`` writes it."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if len(key) > MAX_KEY_IN_PARAM:
        key = key[:MAX_KEY_IN_PARAM] + "..."
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{ascii(key)}]"


def _surrogate(path: str) -> BadRequest:
    where = path or "The request body"
    return BadRequest(
        f"{where} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text; send "
        "characters outside the BMP as a surrogate pair or as UTF-8.",
        param=path or None,
        code="invalid_unicode",
    )


def _too_deep() -> BadRequest:
    return BadRequest(
        f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.",
        code="json_too_deep",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number
