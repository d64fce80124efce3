"""Reading the almost-JSON models write: comments, trailing commas, a stray closing character.

Pure functions plus ``JsonExtent``, which finds where a JSON value ends in text that is still
arriving.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity would not survive a re-encode


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_CODE, _STRING, _LINE_COMMENT, _BLOCK_COMMENT = range(4)
# Real arguments nest a few levels; far deeper would hit Python's recursion limit when decoded
# or re-encoded.
MAX_DEPTH = 100


def strip_json_noise(text: str) -> tuple[str, int]:
    """The text without ``//`` and ``/* */`` comments and commas before ``}`` or ``]``.

    Also how deeply its objects and arrays nest.
    """
    out: list[str] = []
    mode, pos, depth, deepest = _CODE, 0, 0, 0
    while pos < len(text):
        char, pair = text[pos], text[pos : pos + 2]
        if mode == _STRING:
            out.append(pair if char == "\\" else char)
            pos += 1 if char != "\\" else 2
            mode = _CODE if char == '"' else _STRING
            continue
        if mode == _LINE_COMMENT:
            mode = _CODE if char == "\n" else _LINE_COMMENT
        elif mode == _BLOCK_COMMENT:
            if pair == "*/":
                mode, pos = _CODE, pos + 1
        elif pair in ("//", "/*"):
            mode, pos = (_LINE_COMMENT if pair == "//" else _BLOCK_COMMENT), pos + 1
            out.append(" ")  # a comment still separates tokens
        else:
            if char in "}]":
                _drop_trailing_comma(out)
            depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(char, 0)
            deepest = max(deepest, depth)
            out.append(char)
            mode = _STRING if char == '"' else _CODE
        pos += 1
    return "".join(out), deepest


def _drop_trailing_comma(out: list[str]) -> None:
    index = len(out) - 1
    while index >= 0 and out[index].isspace():
        index -= 1
    if index >= 0 and out[index] == ",":
        del out[index]


def json_values(text: str) -> tuple[list[Any], str]:
    """The JSON values one after another at the start of ``text``, and what follows them."""
    clean, depth = strip_json_noise(text)
    values: list[Any] = []
    pos = 0
    if depth > MAX_DEPTH:
        return values, clean.strip()
    while True:
        while pos < len(clean) and clean[pos].isspace():
            pos += 1
        try:
            value, pos = _DECODER.raw_decode(clean, pos)
        except ValueError:
            return values, clean[pos:].strip()
        values.append(value)


def load_lenient(text: str) -> Any:
    """One JSON value, comments and trailing commas allowed; ``ValueError`` otherwise."""
    values, rest = json_values(text)
    if len(values) != 1 or rest:
        raise ValueError("not one JSON value")
    return values[0]


class JsonExtent:
    """Where the JSON object or array starting at ``text[0]`` ends, as the text grows.

    Only nesting, strings and comments are followed, not the grammar: deciding whether the
    value is valid is the parser's job once its end is known.
    """

    def __init__(self) -> None:
        self._pos = 0
        self._depth = 0
        self._mode = _CODE

    def end(self, text: str, limit: int) -> int | None:
        """The index just past the value, or None if it does not end in ``text[:limit]``.

        Call again with the same text grown at its end; the scan goes on where it stopped.
        """
        size = min(len(text), limit)
        while self._pos < size:
            step = self._step(text, size)
            if step == 0:
                return None  # a two-character token is cut at the end: wait for more
            self._pos += step
            if self._depth == 0:
                return self._pos
        return None

    def _step(self, text: str, size: int) -> int:
        char = text[self._pos]
        two_chars = self._pos + 1 < size
        if self._mode == _STRING:
            if char == "\\":
                return 2 if two_chars else 0
            self._mode = _CODE if char == '"' else _STRING
        elif self._mode == _LINE_COMMENT:
            self._mode = _CODE if char == "\n" else _LINE_COMMENT
        elif self._mode == _BLOCK_COMMENT:
            if char == "*":
                if not two_chars:
                    return 0
                if text[self._pos + 1] == "/":
                    self._mode = _CODE
                    return 2
        elif char == "/":
            if not two_chars:
                return 0
            following = text[self._pos + 1]
            if following in "/*":
                self._mode = _LINE_COMMENT if following == "/" else _BLOCK_COMMENT
                return 2
        elif char == '"':
            self._mode = _STRING
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
        return 1
