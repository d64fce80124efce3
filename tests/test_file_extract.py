"""Reading attached documents: PDF, DOCX, HTML and text; format detection; limits.

Every fixture is built here at run time: PDFs are written by hand (``make_pdf``), DOCX files with
``zipfile`` (``make_docx``).
"""

from __future__ import annotations

import io
import random
import zipfile
from xml.sax.saxutils import escape

import pytest
from helpers import pdf_file
from pypdf import PdfWriter

from kimi.errors import BadRequest
from kimi.files.extract import ExtractedText, extract_text
from kimi.files.readers import docx as docx_reader
from kimi.files.readers import text as text_reader

MAX = 100_000
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


# --- fixture builders -------------------------------------------------------------------------


def make_pdf(pages: list[str], *, chinese: str | None = None) -> bytes:
    """A minimal valid PDF: each page shows one Helvetica line, plus ``chinese`` on page one
    (a Type0 font with the predefined UniGB-UTF16-H CMap, so no font file is needed)."""
    fonts = [
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UTF16-H"
        b" /DescendantFonts [5 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 4 >> >>",
    ]
    page_objects: list[bytes] = []
    for index, line in enumerate(pages):
        content = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % _pdf_string(line) if line else b""
        if chinese and index == 0:
            content += (
                b" BT /F2 12 Tf 72 700 Td <%s> Tj ET" % chinese.encode("utf-16-be").hex().encode()
            )
        if not line and not chinese:
            content = b"0 0 1 rg 72 72 200 200 re f"  # a picture of something, but no text
        page_objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (7 + 2 * index)
        )
        page_objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    kids = b" ".join(b"%d 0 R" % (6 + 2 * index) for index in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        *fonts,
        *page_objects,
    ]
    return pdf_file(objects)


def _pdf_string(text: str) -> bytes:
    return (
        text.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    )


def encrypt_pdf(data: bytes, *, user_password: str, owner_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def paragraph(*runs: str) -> str:
    return "<w:p>" + "".join(f"<w:r><w:t>{escape(run)}</w:t></w:r>" for run in runs) + "</w:p>"


def table(rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return f"<w:tc><w:tcPr/>{paragraph(text)}</w:tc>"

    body = "".join("<w:tr>" + "".join(cell(text) for text in row) + "</w:tr>" for row in rows)
    return f"<w:tbl><w:tblPr/>{body}</w:tbl>"


def document_xml(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>'
    ).encode()


def make_docx(body: str = "", *, xml: bytes | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        archive.writestr("word/document.xml", xml if xml is not None else document_xml(body))
    return out.getvalue()


def make_zip(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def read(data: bytes, name: str | None = None, content_type: str | None = None, **options):
    options.setdefault("max_chars", MAX)
    return extract_text(data, filename=name, content_type=content_type, **options)


# --- PDF --------------------------------------------------------------------------------------


def test_pdf_text_is_extracted():
    result = read(make_pdf(["Quarterly revenue grew (a lot)"]), "report.pdf", "application/pdf")

    assert result == ExtractedText("report.pdf", "pdf", "Quarterly revenue grew (a lot)", False)


def test_pdf_chinese_text_is_extracted():
    result = read(make_pdf(["Summary"], chinese="中文摘要"), "report.pdf")

    assert "Summary" in result.text
    assert "中文摘要" in result.text


def test_multi_page_pdf_keeps_every_page_in_order():
    result = read(make_pdf(["Page one", "Page two", "Page three"]), "book.pdf")

    assert result.text == "Page one\n\nPage two\n\nPage three"


def test_pdf_with_only_an_owner_password_is_read():
    data = encrypt_pdf(make_pdf(["Open to read"]), user_password="", owner_password="owner")

    assert read(data, "locked.pdf").text == "Open to read"


def test_password_protected_pdf_is_refused():
    data = encrypt_pdf(make_pdf(["Secret"]), user_password="secret", owner_password="owner")

    with pytest.raises(BadRequest, match=r"'locked\.pdf' is a password-protected PDF"):
        read(data, "locked.pdf")


def test_scanned_pdf_without_text_layer_is_refused_with_a_pointer_to_ocr():
    with pytest.raises(BadRequest) as caught:
        read(make_pdf(["", ""]), "scan.pdf")

    assert "'scan.pdf' has no text layer" in caught.value.message
    assert "WEB_FILE_MODE=upload" in caught.value.message
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\nthis is not a pdf at all",
        make_pdf(["Cut short"])[:120],
        b"",
    ],
    ids=["garbage-after-header", "truncated", "empty"],
)
def test_corrupt_pdf_is_refused(data):
    with pytest.raises(BadRequest, match=r"'broken\.pdf' is not a valid PDF or is damaged"):
        read(data, "broken.pdf", "application/pdf")


# --- DOCX -------------------------------------------------------------------------------------


def test_docx_paragraphs_become_lines():
    body = paragraph("Hello, ", "world.") + paragraph("第二段：中文内容。")

    result = read(make_docx(body), "letter.docx", DOCX_TYPE)

    assert result == ExtractedText("letter.docx", "docx", "Hello, world.\n第二段：中文内容。")


def test_docx_table_is_read_row_by_row():
    body = paragraph("Prices:") + table([["Item", "价格"], ["Tea", "3"]]) + paragraph("End")

    assert read(make_docx(body), "t.docx").text == "Prices:\nItem | 价格\nTea | 3\nEnd"


def test_docx_tabs_and_breaks_are_kept_but_tab_stops_and_deleted_text_are_not():
    body = (
        '<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
        "<w:r><w:t>Name</w:t><w:tab/><w:t>Value</w:t><w:br/><w:t>next line</w:t></w:r>"
        "<w:del><w:r><w:delText>removed</w:delText></w:r></w:del></w:p>"
    )

    assert read(make_docx(body), "t.docx").text == "Name\tValue\nnext line"


def test_docx_runs_of_empty_paragraphs_become_one_blank_line():
    body = paragraph("Title") + "<w:p/>" * 5 + paragraph("  ") + paragraph("Body")

    assert read(make_docx(body), "t.docx").text == "Title\n\nBody"


def test_docx_that_is_not_a_zip_is_refused():
    with pytest.raises(BadRequest, match=r"'fake\.docx' is not a valid DOCX document"):
        read(b"just some words, not a zip", "fake.docx")


def test_zip_without_word_document_declared_as_docx_is_refused():
    with pytest.raises(BadRequest, match=r"'empty\.docx' is not a DOCX document"):
        read(make_zip(**{"readme.txt": b"hi"}), "empty.docx", DOCX_TYPE)


def test_docx_with_broken_xml_is_refused():
    with pytest.raises(BadRequest, match=r"'bad\.docx' is a damaged DOCX document"):
        read(make_docx(xml=b"<w:document><w:body><w:p>"), "bad.docx")


def test_docx_expanding_beyond_the_xml_limit_is_refused(monkeypatch):
    monkeypatch.setattr(docx_reader, "XML_BYTE_LIMIT", 1024 * 1024)
    bomb = make_docx("<w:p/>" * 300_000)  # ~1.8 MB of XML that yields no text

    with pytest.raises(BadRequest, match=r"'bomb\.docx' expands to more than 1048576 bytes"):
        read(bomb, "bomb.docx")


def test_docx_bomb_beyond_the_default_limit_is_refused_without_reading_it_all():
    padding = b" " * (docx_reader.XML_BYTE_LIMIT + 1024 * 1024)
    bomb = make_docx(xml=document_xml("")[: -len("</w:body></w:document>")] + padding)

    assert len(bomb) < docx_reader.XML_BYTE_LIMIT // 100
    with pytest.raises(BadRequest, match="zip bomb"):
        read(bomb, "bomb.docx")


def test_docx_whose_zip_understates_the_xml_size_is_refused():
    data = bytearray(make_docx(paragraph("Hello world") * 100))
    central_entry = data.rfind(b"word/document.xml") - 46  # name follows a 46-byte header
    data[central_entry + 24 : central_entry + 28] = (10).to_bytes(4, "little")

    with pytest.raises(BadRequest, match=r"'liar\.docx' is not a valid DOCX document"):
        read(bytes(data), "liar.docx")


def test_docx_with_lots_of_text_is_truncated_not_refused(monkeypatch):
    monkeypatch.setattr(docx_reader, "XML_BYTE_LIMIT", 1024 * 1024)
    big = make_docx(paragraph("word " * 100) * 10_000)  # ~5 MB of XML, all of it text

    result = read(big, "big.docx", max_chars=1000)

    assert result.truncated
    assert result.text == ("word " * 100 + "\n") * 1 + ("word " * 100)[: 1000 - 501]


# --- HTML -------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><title>Ignored title</title><style>p { color: red }</style>
<script>var secret = "</p>";</script></head>
<body><h1>Main   heading</h1><p>First &amp; <b>bold</b> paragraph,<br>second line.</p>
<div>Caf&eacute; &lt;ok&gt; &#20013;&#25991;</div>
<table><tr><th>Name</th><th>Qty</th></tr><tr><td><p>Tea</p></td><td>3</td></tr></table>
<pre>  indented
    code</pre><script>alert(1)</script><noscript>Enable JS</noscript>
</body></html>"""


def test_html_keeps_visible_text_with_line_breaks_for_blocks():
    result = read(PAGE.encode(), "page.html", "text/html")

    assert result.kind == "html"
    assert result.text == (
        "Main heading\n"
        "First & bold paragraph,\nsecond line.\n"
        "Café <ok> 中文\n"
        "Name | Qty\nTea | 3\n"
        "  indented\n    code"
    )


def test_html_head_without_closing_tag_ends_at_the_body():
    page = b"<html><head><title>t</title><body><p>Visible</p></body></html>"

    assert read(page, "p.html").text == "Visible"


# --- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("价格 café\n".encode(), "text/plain"),
        (b"\xef\xbb\xbf" + "价格 café\n".encode(), "text/plain"),
        ("价格 café\n".encode("utf-16"), "text/plain"),
        ("价格 café\n".encode("gb18030"), "text/plain"),
        ("价格 café\n".encode("utf-16-le"), "text/plain; charset=UTF-16LE"),
        ("价格 café\r\n".encode(), "text/plain"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-bom", "gb18030", "declared-charset", "crlf"],
)
def test_text_is_decoded(data, content_type):
    assert read(data, "notes.txt", content_type).text == "价格 café\n"


def test_text_that_is_neither_utf8_nor_gb18030_falls_back_to_latin1():
    assert read("naïve café".encode("latin-1"), "old.txt").text == "naïve café"


@pytest.mark.parametrize("chunk_size", range(1, 9))
def test_text_split_across_reads_decodes_the_same(monkeypatch, chunk_size):
    monkeypatch.setattr(text_reader, "READ_CHUNK_BYTES", chunk_size)
    data = "a\r\nb中文\r\rc\r\n".encode()

    assert read(data, "a.txt").text == "a\nb中文\n\nc\n"


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("table.csv", 'name,price\n"Tea, green",3\n', "csv"),
        ("table.tsv", "name\tprice\nTea\t3\n", "tsv"),
        ("data.json", '{"name": "茶", "price": 3}\n', "json"),
        ("feed.xml", "<?xml version='1.0'?><items><item>Tea</item></items>", "xml"),
        ("conf.yaml", "name: tea\nprice: 3\n", "yaml"),
        ("README.md", "# Title\n\n*emphasis*\n", "markdown"),
        ("main.py", "def main():\n    return 1\n", "code"),
    ],
)
def test_text_formats_are_kept_verbatim(name, text, kind):
    assert read(text.encode(), name) == ExtractedText(name, kind, text)


# --- detection --------------------------------------------------------------------------------

SAMPLES = {
    "pdf": make_pdf(["Hello"]),
    "docx": make_docx(paragraph("Hello")),
    "html": b"<!DOCTYPE html><html><body><p>Hello</p></body></html>",
    "text": b"Hello",
}


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("pdf", "application/pdf"),
        ("docx", DOCX_TYPE),
        ("html", "text/html; charset=utf-8"),
        ("text", "text/plain"),
    ],
)
def test_format_is_taken_from_the_content_type(kind, content_type):
    result = read(SAMPLES[kind], "upload", content_type)

    assert (result.kind, result.text) == (kind, "Hello")


@pytest.mark.parametrize(
    ("kind", "name"),
    [("pdf", "a.PDF"), ("docx", "a.docx"), ("html", "a.htm"), ("text", "a.txt")],
)
def test_format_is_taken_from_the_extension_when_the_content_type_is_generic(kind, name):
    result = read(SAMPLES[kind], name, "application/octet-stream")

    assert (result.kind, result.text) == (kind, "Hello")


@pytest.mark.parametrize("kind", ["pdf", "docx", "html", "text"])
def test_format_is_sniffed_from_the_bytes_when_nothing_else_says(kind):
    result = read(SAMPLES[kind], None, "application/octet-stream")

    assert (result.name, result.kind, result.text) == ("document", kind, "Hello")


def test_content_type_wins_over_extension():
    result = read(b"<p>Hello</p>", "page.html", "text/plain")

    assert (result.kind, result.text) == ("text", "<p>Hello</p>")


# --- unsupported input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "content_type", "what"),
    [
        (PNG_BYTES, "photo.png", "image/png", "an image (image/png)"),
        (PNG_BYTES, "photo", "application/octet-stream", "a PNG image"),
        (PNG_BYTES, "photo.txt", None, "binary data"),
        (random.Random(7).randbytes(4096), "blob", "application/octet-stream", "binary data"),
        (make_zip(**{"a.txt": b"hi"}), "bundle", None, "a ZIP archive that is not a DOCX"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "old", None, "a legacy Office file"),
        (b"anything", "old.doc", "application/msword", "a legacy Word .doc file"),
    ],
    ids=["png-declared", "png-sniffed", "png-as-txt", "random", "zip", "ole2", "doc"],
)
def test_unsupported_binary_is_refused_naming_the_file(data, name, content_type, what):
    with pytest.raises(BadRequest) as caught:
        read(data, name, content_type)

    assert caught.value.message.startswith(f"file {name!r} is {what}")
    assert "cannot be read as text" in caught.value.message


# --- limits -----------------------------------------------------------------------------------

LONG = {
    "text": ("long.txt", b"0123456789" * 50),
    "html": ("long.html", b"<p>" + b"0123456789" * 50 + b"</p>"),
    "pdf": ("long.pdf", make_pdf(["0123456789" * 50])),
    "docx": ("long.docx", make_docx(paragraph("0123456789" * 50))),
}


@pytest.mark.parametrize("kind", LONG)
def test_text_beyond_max_chars_is_truncated(kind):
    name, data = LONG[kind]

    result = read(data, name, max_chars=25)

    assert (result.kind, result.text, result.truncated) == (kind, "0123456789012345678901234", True)


@pytest.mark.parametrize("kind", LONG)
def test_text_exactly_at_max_chars_is_not_truncated(kind):
    name, data = LONG[kind]

    result = read(data, name, max_chars=500)

    assert (len(result.text), result.truncated) == (500, False)


@pytest.mark.parametrize("kind", LONG)
def test_overflow_can_be_an_error_naming_the_file_and_the_limit(kind):
    name, data = LONG[kind]

    with pytest.raises(BadRequest, match=rf"file '{name}' has more than 25 characters"):
        read(data, name, max_chars=25, on_overflow="error")


def test_overflow_error_is_not_raised_within_the_limit():
    assert not read(b"short", "a.txt", max_chars=25, on_overflow="error").truncated


# --- input kinds ------------------------------------------------------------------------------


class NonSeekable(io.RawIOBase):
    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["pdf", "docx", "text"])
def test_paths_and_file_objects_read_like_bytes(tmp_path, kind):
    path = tmp_path / f"upload.{kind if kind != 'text' else 'txt'}"
    path.write_bytes(SAMPLES[kind])

    from_path = extract_text(path, max_chars=MAX)
    with path.open("rb") as stream:
        from_file = extract_text(stream, max_chars=MAX)
    from_pipe = extract_text(NonSeekable(SAMPLES[kind]), filename=path.name, max_chars=MAX)

    assert from_path == from_file == from_pipe == ExtractedText(path.name, kind, "Hello")
