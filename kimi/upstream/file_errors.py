"""Kimi's refusals of a file call (either backend's upload flow), named for the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import KimiError, RateLimited, UpstreamAuthRejected, UpstreamError, UpstreamTimeout

# Errors the turn acts on as they are: a refresh and another try, another account.
ACCOUNT_ERRORS = (UpstreamAuthRejected, RateLimited)


@contextmanager
def about_file(name: str, doing: str) -> Iterator[None]:
    """Kimi's refusals of a file call, named for the file. A 404 or 403 there (a moved route, a
    file Kimi lost) is a 502 ``file_upload_failed``: it is no conversation the client named."""
    try:
        yield
    except ACCOUNT_ERRORS:
        raise
    except (UpstreamError, UpstreamTimeout) as exc:
        if name not in exc.message:
            exc.message = f"{exc.message.rstrip('.')}, while {doing} {name}."
            exc.args = (exc.message,)
        raise
    except KimiError as exc:
        # The service's reading ("does not know this conversation") is wrong here: keep only
        # Kimi's own words.
        said = exc.said or exc.message
        raise UpstreamError(
            f"Kimi refused {doing} {name}: {said}", code="file_upload_failed"
        ) from exc
