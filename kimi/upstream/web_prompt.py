"""Attached documents' text in the prompt (web protocol): one delimited block per document.

Anything in a document's text that looks like a ``<document`` or ``</document`` tag is escaped,
so a document can neither close its own block nor forge another one.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from ..files.extract import ExtractedText

__all__ = ["TRUNCATION_NOTE", "format_for_prompt"]

TRUNCATION_NOTE = "[Document truncated: only its beginning is included above.]"
BLOCK_SEPARATOR = "\n\n"

_TAG_LIKE = re.compile(r"<(?=\s*/?\s*document)", re.IGNORECASE)
_ATTRIBUTE_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def format_for_prompt(files: Sequence[ExtractedText]) -> str:
    """The documents as ``<document name=".." type="..">`` blocks, one after the other."""
    return BLOCK_SEPARATOR.join(_document_block(document) for document in files)


def _document_block(document: ExtractedText) -> str:
    attributes = f'name="{_attribute(document.name)}" type="{_attribute(document.kind)}"'
    note = ""
    if document.truncated:
        attributes += ' truncated="true"'
        note = "\n" + TRUNCATION_NOTE
    body = _TAG_LIKE.sub("&lt;", document.text)
    return f"<document {attributes}>\n{body}{note}\n</document>"


def _attribute(value: str) -> str:
    return html.escape(_ATTRIBUTE_UNSAFE.sub(" ", value), quote=True)
