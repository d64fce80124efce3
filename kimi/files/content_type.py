"""Reading the parts of a ``Content-Type`` value: the media type and the ``charset`` parameter."""

from __future__ import annotations

__all__ = ["charset_param", "media_type"]


def media_type(content_type: str | None) -> str:
    """The lower-cased ``type/subtype`` without parameters; ``""`` when there is none."""
    return (content_type or "").partition(";")[0].strip().lower()


def charset_param(content_type: str | None) -> str | None:
    """The value of the ``charset`` parameter as written (unquoted), if there is one."""
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None
