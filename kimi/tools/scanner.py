"""Splitting a model's reply into text and function calls while it arrives.

The scanner passes text through at once and holds back only what might start a call: a
``<tool_call>`` tag (or its beginning at the end of the text so far), a code fence until its
body is clearly not a call, or a bare ``{``/``[`` where the answer (or the text after a call)
begins. A held candidate becomes calls when it is complete and well-formed, and is released as
text otherwise. Every decision depends only on text already seen, so the result is the same
however the reply is split; ``parse_tool_reply`` is this scanner fed the whole reply at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .calls import ParsedCall, calls_in_block
from .lenient_json import JsonExtent
from .markup import CALL_CLOSE, CALL_OPEN, FENCE
from .spec import ToolConfig

# A call is small; a longer candidate is released as text so nothing is held without bound.
MAX_CALL_CHARS = 64 * 1024
# Fence languages a bare JSON call may be written under; a tagged call may be under any.
JSON_FENCE_INFOS = frozenset({"", "json", "jsonc", "json5", "javascript", "js", "tool_call"})
_FENCE_INFO = re.compile(r"[\w+#.-]{0,16}\s*")
_NON_SPACE = re.compile(r"\S")
BARE_STARTS = "{["

Piece = str | ParsedCall
Evaluate = Callable[[str], "list[ParsedCall] | None"]


@dataclass(frozen=True)
class _Decision:
    """The first ``length`` held characters are ``calls``, or text when ``calls`` is None."""

    length: int
    calls: list[ParsedCall] | None = None
    in_code: bool | None = None  # inside a code block that is not a call from here (None: as is)


def _text(length: int, *, in_code: bool | None = None) -> _Decision:
    return _Decision(length, None, in_code)


class ToolCallScanner:
    """Feed reply text in pieces; get back text pieces and ``ParsedCall``s in order.

    Text before the first call loses its trailing whitespace; text after it is dropped, and with
    ``parallel`` false so is every call after the first.
    """

    def __init__(self, config: ToolConfig, *, max_call_chars: int = MAX_CALL_CHARS) -> None:
        self._config = config
        self._max = max_call_chars
        self._held = ""  # undecided text: a possible call starts here
        self._space = ""  # whitespace after the text let through, dropped if a call follows
        self._bare_ok = True  # only whitespace and calls so far: a bare JSON call may start
        self._in_code = False  # inside a code block that turned out not to be a call
        self._probe: _Probe | None = None  # the candidate at the start of _held
        self._out: list[Piece] = []
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        """The text and calls decided once ``text`` is added to the reply."""
        self._held += text
        self._advance(final=False)
        return self._take()

    def finish(self) -> list[Piece]:
        """The end of the reply: decide everything still held."""
        self._advance(final=True)
        if not self.calls and self._space:
            self._out.append(self._space)
        self._space = ""
        return self._take()

    def _take(self) -> list[Piece]:
        out, self._out = self._out, []
        return out

    def _advance(self, *, final: bool) -> None:
        while self._held:
            if self._probe is None:
                start = self._candidate_start()
                if start is None:
                    self._let_through(self._held)
                    self._held = ""
                    return
                self._let_through(self._held[:start])
                self._held = self._held[start:]
                self._probe = self._new_probe()
            decision = self._probe.decide(self._held, final)
            if decision is None:
                return
            self._probe = None
            self._apply(decision)

    def _candidate_start(self) -> int | None:
        held = self._held
        if self._bare_ok:
            first = _NON_SPACE.search(held)
            if first is None:
                return None  # only whitespace: kept back by _let_through
            if held[first.start()] in BARE_STARTS:
                return first.start()
        found = [_marker_start(held, marker) for marker in (CALL_OPEN, FENCE)]
        return min((index for index in found if index is not None), default=None)

    def _new_probe(self) -> _Probe:
        first = self._held[0]
        if first == "<":
            return _TagProbe(self._read_block, self._max)
        if first == "`":
            return _FenceEndProbe() if self._in_code else _FenceProbe(self._read_block, self._max)
        return _BareProbe(self._read_block, self._max)

    def _read_block(self, body: str) -> list[ParsedCall] | None:
        return calls_in_block(body, self._config)

    def _apply(self, decision: _Decision) -> None:
        head, self._held = self._held[: decision.length], self._held[decision.length :]
        if decision.in_code is not None:
            self._in_code = decision.in_code
        if decision.calls is None:
            self._let_through(head)
            return
        self._space = ""
        self._bare_ok = True
        for call in decision.calls:
            if self.calls and not self._config.parallel:
                break
            self._out.append(call)
            self.calls += 1

    def _let_through(self, text: str) -> None:
        """Text is shown before the first call; trailing whitespace waits for what follows."""
        if not text:
            return
        whole = self._space + text
        shown = whole.rstrip()
        self._space = whole[len(shown) :]
        if shown:
            self._bare_ok = False
            if not self.calls:
                self._out.append(shown)


def _marker_start(text: str, marker: str) -> int | None:
    """Where ``marker`` first starts in ``text``, counting a beginning of it cut at the end."""
    index = text.find(marker)
    if index >= 0:
        return index
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return len(text) - size
    return None


class _Probe:
    """Decides whether the text at the start of the held text is a call, as it grows."""

    def decide(self, held: str, final: bool) -> _Decision | None:
        """A decision, or None to wait for more text (never None when ``final``)."""
        raise NotImplementedError


def _cut_marker(held: str, marker: str, final: bool) -> _Decision | None:
    """For held text that does not start with the whole ``marker``: wait, or it is text."""
    if marker.startswith(held) and not final:
        return None
    return _text(1)


class _TagProbe(_Probe):
    """``<tool_call>`` up to ``</tool_call>``, the next ``<tool_call>`` or the end of reply."""

    def __init__(self, evaluate: Evaluate, max_chars: int) -> None:
        self._evaluate = evaluate
        self._max = max_chars
        self._search_from = len(CALL_OPEN)

    def decide(self, held: str, final: bool) -> _Decision | None:
        if not held.startswith(CALL_OPEN):
            return _cut_marker(held, CALL_OPEN, final)
        close = held.find(CALL_CLOSE, self._search_from, self._max)
        reopen = held.find(CALL_OPEN, self._search_from, self._max)
        if close >= 0 and (reopen < 0 or close < reopen):
            return self._block(held, close, close + len(CALL_CLOSE))
        if reopen >= 0:
            return self._block(held, reopen, reopen)
        if len(held) >= self._max:
            return _text(self._max)
        if not final:
            # Neither tag lies before this point; one may still end across it.
            self._search_from = max(self._search_from, len(held) - len(CALL_CLOSE) + 1)
            return None
        return self._block(held, len(held), len(held))

    def _block(self, held: str, body_end: int, length: int) -> _Decision:
        calls = self._evaluate(held[len(CALL_OPEN) : body_end])
        return _Decision(length, calls) if calls else _text(length)


class _FenceProbe(_Probe):
    """A code fence holding a call: JSON under a JSON-ish language, or tags under any."""

    def __init__(self, evaluate: Evaluate, max_chars: int) -> None:
        self._evaluate = evaluate
        self._max = max_chars
        self._search_from: int | None = None  # set once the body starts like a call

    def decide(self, held: str, final: bool) -> _Decision | None:
        if not held.startswith(FENCE):
            return _cut_marker(held, FENCE, final)
        if self._search_from is None:
            opening = self._opening(held, final)
            if not isinstance(opening, int):
                return opening
            self._search_from = opening
        close = held.find(FENCE, self._search_from, self._max)
        if close >= 0:
            return self._block(held, close, close + len(FENCE))
        if len(held) >= self._max:
            return _text(self._max, in_code=True)
        if not final:
            self._search_from = max(self._search_from, len(held) - len(FENCE) + 1)
            return None
        return self._block(held, len(held), len(held))

    def _opening(self, held: str, final: bool) -> int | _Decision | None:
        """Where a call-like body starts; else not a call (a code block) or wait."""
        newline = held.find("\n", len(FENCE))
        info = held[len(FENCE) : newline if newline >= 0 else len(held)]
        if not _FENCE_INFO.fullmatch(info) or (newline < 0 and final):
            return _text(len(FENCE), in_code=True)
        if newline < 0:
            return None
        first = _NON_SPACE.search(held, newline + 1)
        if first is None:
            return _text(len(FENCE), in_code=True) if final else None
        body = held[first.start() :]
        if body[0] in BARE_STARTS and info.strip().lower() in JSON_FENCE_INFOS:
            return newline + 1
        if body.startswith(CALL_OPEN):
            return newline + 1
        if CALL_OPEN.startswith(body) and not final:
            return None
        return _text(len(FENCE), in_code=True)

    def _block(self, held: str, body_end: int, length: int) -> _Decision:
        # The body is re-read from the line after the opening fence.
        body_start = held.find("\n", len(FENCE)) + 1
        calls = self._evaluate(held[body_start:body_end])
        return _Decision(length, calls) if calls else _text(length)


class _FenceEndProbe(_Probe):
    """The fence closing a code block that is not a call: text, and the block is over."""

    def decide(self, held: str, final: bool) -> _Decision | None:
        if held.startswith(FENCE):
            return _text(len(FENCE), in_code=False)
        return _cut_marker(held, FENCE, final)


class _BareProbe(_Probe):
    """A JSON object or array written as the whole answer, or right after a call."""

    def __init__(self, evaluate: Evaluate, max_chars: int) -> None:
        self._evaluate = evaluate
        self._max = max_chars
        self._extent = JsonExtent()

    def decide(self, held: str, final: bool) -> _Decision | None:
        end = self._extent.end(held, self._max)
        if end is not None:
            calls = self._evaluate(held[:end])
            return _Decision(end, calls) if calls else _text(end)
        if len(held) >= self._max:
            return _text(self._max)
        return _text(len(held)) if final else None
