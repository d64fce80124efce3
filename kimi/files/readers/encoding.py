"""Choosing the encoding of a text document from its first bytes.

In order of trust:

1. a byte-order mark (UTF-8, UTF-16, UTF-32);
2. a charset the source declared (its Content-Type, an HTML ``<meta>``, an XML declaration),
   if the bytes decode with it; a declaration the bytes contradict is ignored, and so is a
   legacy charset on bytes that are valid UTF-8 (servers label UTF-8 files ISO-8859-1 by
   default);
3. UTF-8, when the bytes are UTF-8 apart from a rare stray byte;
4. ``charset-normalizer``'s best guess (Big5, Shift-JIS, EUC-KR, cp1251, GB18030, ...);
5. latin-1, which never fails and shows binary data as control characters.

Labels that name a subset of what files are really written in (GB2312, Big5, Shift-JIS, ...)
are widened to the superset, as the WHATWG Encoding standard does for browsers.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterable

import charset_normalizer

__all__ = ["charset_in_html", "charset_in_xml", "choose_encoding", "codec_for"]

log = logging.getLogger(__name__)

FALLBACK_ENCODING = "latin-1"
REPLACEMENT_CHARACTER = "\ufffd"
# UTF-8 with at most one invalid byte per this many valid non-ASCII characters is UTF-8 with a
# few stray bytes; legacy CJK or Cyrillic text read as UTF-8 is invalid almost everywhere.
UTF8_STRAY_BYTE_RATIO = 20
# HTML's prescan for <meta charset> looks at the first 1024 bytes (WHATWG HTML 13.2.3.2).
DECLARATION_BYTES = 1024
# How far back from the end of a cut probe to look for a byte that cannot be inside a character.
BOUNDARY_SEARCH_BYTES = 1024
# Very short texts score the same under several encodings; ties go to the likeliest source of a
# document sent to Kimi, then to Western European.
PREFERRED_WHEN_TIED = ("gb18030", "cp1252")

_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "cp950",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
}
# Python's own text codecs that are no character set a document is written in.
_NOT_CHARSETS = frozenset({"idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined"})
_LABEL = rb"([a-z0-9_.:-]+)"
_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*" + _LABEL, re.IGNORECASE)
_XML_ENCODING = re.compile(rb"<\?xml\b[^>]*?\bencoding\s*=\s*[\"']" + _LABEL, re.IGNORECASE)


def choose_encoding(probe: bytes, declared: Iterable[str | None] = (), *, complete: bool) -> str:
    """The codec to decode a document with, judged on its first bytes.

    ``declared`` lists the charsets the source named, most authoritative first; ``complete``
    says the probe is the whole document (otherwise its end may split a character).
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if probe.startswith(mark):
            return encoding
    for label in declared:
        encoding = codec_for(label)
        if encoding and _declaration_fits(probe, encoding, complete):
            return encoding
    if _mostly_utf8(probe, complete):
        return "utf-8"
    return _detected(probe, complete) or FALLBACK_ENCODING


def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset label, widened to its superset; ``None`` when the label
    is unknown or names a codec that is no character set (``base64``, ``rot13``, ``idna``)."""
    if not label:
        return None
    try:
        name = codecs.lookup(label).name
        if name in _NOT_CHARSETS:
            return None
        # bytes.decode refuses bytes-to-bytes and text-to-text codecs, but not on empty input.
        b"a".decode(name, errors="ignore")
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def charset_in_html(head: bytes) -> str | None:
    """The charset of a ``<meta charset>`` or ``<meta http-equiv>`` tag near the top of a page."""
    match = _META_CHARSET.search(head[:DECLARATION_BYTES])
    return match.group(1).decode("ascii") if match else None


def charset_in_xml(head: bytes) -> str | None:
    """The ``encoding`` of an XML declaration at the very start of the bytes."""
    match = _XML_ENCODING.match(head[:DECLARATION_BYTES])
    return match.group(1).decode("ascii") if match else None


def _declaration_fits(probe: bytes, encoding: str, complete: bool) -> bool:
    if not _decodes(probe, encoding, complete):
        log.info("ignoring the declared charset %s: the bytes do not decode with it", encoding)
        return False
    legacy = not encoding.startswith("utf")
    if legacy and not probe.isascii() and _decodes(probe, "utf-8", complete):
        log.info("ignoring the declared charset %s: the bytes are UTF-8", encoding)
        return False
    return True


def _decodes(probe: bytes, encoding: str, complete: bool) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(probe, final=complete)
    except UnicodeError:  # some codecs raise UnicodeError itself, not its decode subclass
        return False
    return True


def _mostly_utf8(probe: bytes, complete: bool) -> bool:
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(probe, final=complete)
    stray = text.count(REPLACEMENT_CHARACTER)
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore")) - stray
    return stray * UTF8_STRAY_BYTE_RATIO <= non_ascii


def _detected(probe: bytes, complete: bool) -> str | None:
    matches = charset_normalizer.from_bytes(probe if complete else _whole_characters(probe))
    best = matches.best()
    if best is None:
        return None
    tied = {m.encoding for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    guess = next((name for name in PREFERRED_WHEN_TIED if name in tied), best.encoding)
    log.debug("detected %s (language %s)", guess, best.language)
    return codec_for(guess)


def _whole_characters(probe: bytes) -> bytes:
    """The probe up to its last byte below 0x30, if there is one near its end.

    Such a byte (controls, space, ``!"#$%&'()*+,-./``) is never a second or later byte of a
    character in Big5, GBK/GB18030, Shift-JIS, EUC or UTF-8, so cutting after it splits none:
    the detector decodes multi-byte candidates strictly and drops one that fails at the end.
    """
    start = max(0, len(probe) - BOUNDARY_SEARCH_BYTES)
    for index in range(len(probe) - 1, start - 1, -1):
        if probe[index] < 0x30:
            return probe[: index + 1]
    return probe
