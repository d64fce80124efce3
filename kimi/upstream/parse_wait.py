"""Waiting for Kimi to finish reading an uploaded file: one poll, then another, to a deadline.

Both generations' upload flows end so; only what one poll asks differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import UpstreamTimeout

# Kimi reads an image in about a second; polling faster only adds calls.
POLL_SECONDS = 0.5

T = TypeVar("T")


def poll_until_ready(
    attempt: Callable[[], T | None], name: str, timeout: float, interval: float = POLL_SECONDS
) -> T:
    """``attempt()``'s first answer that is not None; a 504 naming ``name`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() + interval > deadline:
            raise UpstreamTimeout(
                f"Kimi did not finish reading {name} within {timeout:g} s "
                "(FILE_PARSE_TIMEOUT); try a smaller file or again later.",
                code="file_parse_timeout",
            )
        time.sleep(interval)
