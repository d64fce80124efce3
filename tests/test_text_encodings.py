"""Text documents in the encodings people's tools save them in: detected, declared, or marked.

The samples (``text_samples``) are real sentences; each test asserts the text its author wrote
comes back, whatever the bytes' encoding and however they were declared.
"""

from __future__ import annotations

import codecs

import pytest
from text_samples import ENCODED, JAPANESE, RUSSIAN, SIMPLIFIED_CHINESE, TRADITIONAL_CHINESE

from kimi.files.extract import extract_text
from kimi.files.readers import text as text_reader
from kimi.files.readers.encoding import choose_encoding

MAX = 1_000_000
# Too short for any detector to tell Big5 from its neighbours: only a declaration can say.
SHORT_BIG5_TEXT = "會議記錄：下週一開會"
MULTILINGUAL = SIMPLIFIED_CHINESE + TRADITIONAL_CHINESE + JAPANESE + RUSSIAN


def read(data: bytes, content_type: str | None = "text/plain", name: str = "notes.txt") -> str:
    return extract_text(data, filename=name, content_type=content_type, max_chars=MAX).text


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODED)
def test_legacy_encodings_are_read_without_a_declaration(encoding):
    assert read(ENCODED[encoding].encode(encoding)) == ENCODED[encoding]


@pytest.mark.parametrize("encoding", ENCODED)
def test_a_document_longer_than_the_probe_is_read_to_its_end(encoding):
    copies = text_reader.PROBE_BYTES // len(ENCODED[encoding].encode(encoding)) + 2
    document = ENCODED[encoding] * copies

    assert read(document.encode(encoding)) == document


@pytest.mark.parametrize("encoding", ENCODED)
def test_the_encoding_is_found_wherever_the_probe_cuts_a_character(encoding):
    data = (ENCODED[encoding] * 2).encode(encoding)

    for cut in range(len(data) // 2, len(data)):
        chosen = choose_encoding(data[:cut], complete=False)
        assert data.decode(chosen) == ENCODED[encoding] * 2, f"probe of {cut} bytes: {chosen}"


@pytest.mark.parametrize("encoding", ENCODED)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
def test_reads_of_any_size_decode_the_same(monkeypatch, encoding, chunk_size):
    monkeypatch.setattr(text_reader, "READ_CHUNK_BYTES", chunk_size)

    assert read(ENCODED[encoding].encode(encoding)) == ENCODED[encoding]


def test_utf8_with_a_stray_byte_stays_utf8_with_one_replacement_character():
    data = SIMPLIFIED_CHINESE.encode()
    middle = data.index("北京".encode())

    result = read(data[:middle] + b"\xa0" + data[middle:])

    assert result == SIMPLIFIED_CHINESE.replace("北京", "\ufffd北京")


# --- byte-order marks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        MULTILINGUAL.encode("utf-8"),
        codecs.BOM_UTF8 + MULTILINGUAL.encode("utf-8"),
        MULTILINGUAL.encode("utf-16"),
        codecs.BOM_UTF16_BE + MULTILINGUAL.encode("utf-16-be"),
        MULTILINGUAL.encode("utf-32"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-bom", "utf-16-be-bom", "utf-32-bom"],
)
def test_unicode_text_is_read_with_or_without_a_byte_order_mark(data):
    assert read(data) == MULTILINGUAL


def test_a_byte_order_mark_wins_over_a_declared_charset():
    data = MULTILINGUAL.encode("utf-16")

    assert read(data, "text/plain; charset=big5") == MULTILINGUAL


# --- declared charsets ------------------------------------------------------------------------


def test_a_declared_charset_decides_a_text_too_short_to_detect():
    assert read(SHORT_BIG5_TEXT.encode("big5"), "text/plain; charset=Big5") == SHORT_BIG5_TEXT


def test_a_declared_charset_is_widened_to_what_windows_saves():
    text = "價格：€5（含稅）"  # the euro sign is in Windows' Big5 (cp950), not in Big5 itself

    assert read(text.encode("cp950"), "text/plain; charset=big5") == text


@pytest.mark.parametrize("declared", ["utf-16-le", "UTF-16BE", "utf-32le"])
def test_a_declared_unicode_charset_needs_no_byte_order_mark(declared):
    data = MULTILINGUAL.encode(declared)

    assert read(data, f"text/plain; charset={declared}") == MULTILINGUAL


def test_a_declared_charset_the_bytes_contradict_is_ignored():
    data = TRADITIONAL_CHINESE.encode("big5")

    assert read(data, "text/plain; charset=utf-8") == TRADITIONAL_CHINESE


@pytest.mark.parametrize("declared", ["iso-8859-1", "windows-1251", "gb2312"])
def test_utf8_labelled_with_a_legacy_charset_is_read_as_utf8(declared):
    assert read(MULTILINGUAL.encode(), f"text/plain; charset={declared}") == MULTILINGUAL


@pytest.mark.parametrize(
    "label", ["x-no-such-charset", "base64", "rot13", "hex", "idna", "unicode_escape", '""']
)
def test_unknown_or_non_text_charset_labels_are_ignored(label):
    assert read(RUSSIAN.encode("cp1251"), f"text/plain; charset={label}") == RUSSIAN


def test_an_xml_declaration_names_the_encoding():
    xml = f'<?xml version="1.0" encoding="Big5"?>\n<note>{SHORT_BIG5_TEXT}</note>\n'

    assert read(xml.encode("big5"), "application/xml", "note.xml") == xml


# --- HTML -------------------------------------------------------------------------------------


def page(meta: str, body: str) -> str:
    head = f"<head>{meta}<title>Notes</title></head>"
    return f"<!DOCTYPE html>\n<html>{head}<body><p>{body}</p></body></html>"


@pytest.mark.parametrize(
    "meta",
    [
        '<meta charset="big5">',
        "<META CHARSET=BIG5>",
        '<meta http-equiv="Content-Type" content="text/html; charset=big5">',
    ],
    ids=["meta-charset", "unquoted-upper-case", "http-equiv"],
)
def test_an_html_meta_tag_names_the_encoding(meta):
    data = page(meta, SHORT_BIG5_TEXT).encode("big5")

    assert read(data, "text/html", "page.html") == SHORT_BIG5_TEXT


def test_the_content_type_charset_wins_over_the_page_meta_tag():
    data = page('<meta charset="gb2312">', TRADITIONAL_CHINESE).encode("big5")

    assert read(data, "text/html; charset=big5", "page.html") == TRADITIONAL_CHINESE.strip()


@pytest.mark.parametrize("encoding", ENCODED)
def test_html_pages_in_legacy_encodings_are_read_without_a_declaration(encoding):
    data = page("", ENCODED[encoding]).encode(encoding)

    assert read(data, "text/html", "page.html") == ENCODED[encoding].strip()
