"""What both adapters share about talking HTTP to Kimi: the session, headers, error mapping.

Foreign exceptions (``requests``) are translated into ``KimiError`` here, at one boundary.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_hooks
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError

from ..errors import (
    ConversationBusy,
    KimiError,
    NotFound,
    RateLimited,
    UpstreamAuthRejected,
    UpstreamCut,
    UpstreamError,
    UpstreamTimeout,
)
from ..settings import Settings
from .base import Session
from .chunked import can_read_chunked, iter_chunked

log = logging.getLogger(__name__)

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TIMEZONE = "Asia/Shanghai"
# Connections kept for reuse: as many as the streams a worker holds by default
# (MAX_STREAMS_PER_WORKER), so that a busy worker does not open (and, on kimi.com, handshake TLS
# for) a new connection for every turn beyond the pool, and close it after.
POOL_SIZE = Settings.max_streams_per_worker
MESSAGE_LIMIT = 300  # characters of an upstream error message passed on to the client
# A request body up to this size leaves in the same write as the request's head.
ONE_WRITE_BODY_LIMIT = 64 * 1024


def make_http_session() -> requests.Session:
    """One pooled session per adapter. No cookies: every call carries its own credential."""
    session = _Session()
    session.cookies.set_policy(_NO_COOKIES)
    adapter = _Adapter(pool_connections=8, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Only what requests can decode; never "br, zstd" unless their decoders are installed.
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"})
    # requests reads proxy, CA-bundle and .netrc settings from the environment on every call
    # when trust_env is on, a large share of a short call's CPU. The environment does not change
    # while we run: look once. A CA bundle is set on the session; only proxies and .netrc keep
    # requests reading the environment.
    bundle = _ca_bundle()
    if bundle:
        session.verify = bundle
    session.trust_env = _environment_configures_http()
    return session


def _ca_bundle() -> str | None:
    """The CA bundle requests would read from the environment, if one is named."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def _environment_configures_http() -> bool:
    """Whether proxies or a .netrc file are set up for requests to honour."""
    if urllib.request.getproxies():
        return True
    if os.environ.get("NETRC"):
        return True
    return any(os.path.exists(os.path.expanduser(f"~/{name}")) for name in (".netrc", "_netrc"))


class _Session(requests.Session):
    """requests' session without the per-call work that never applies to Kimi's calls: merging
    cookies, params and auth that are never set, and parsing the same URL again. That work was
    most of a short call's own CPU (about 90 us of each call's preparation, two calls a turn).
    Anything unusual (cookies, params, auth, files, an environment to read) goes the usual way.
    """

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if (
            request.cookies
            or request.auth
            or request.params
            or request.files
            or self.auth
            or self.params
            or self.trust_env
            or len(self.cookies)
        ):
            return super().prepare_request(request)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(request.method)
        prepared.url = _prepared_url(request.url)
        headers = CaseInsensitiveDict(self.headers)
        headers.update(request.headers or {})
        prepared.prepare_headers({k: v for k, v in headers.items() if v is not None})
        prepared._cookies = _NO_COOKIE_JAR  # followed redirects take none either
        prepared.prepare_body(request.data, request.files, request.json)
        if "@" in prepared.url:  # credentials in the URL
            prepared.prepare_auth(None, prepared.url)
        prepared.prepare_hooks(merge_hooks(request.hooks, self.hooks))
        return prepared

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged = {**self.proxies, **(proxies or {})}
        return {
            "proxies": {k: v for k, v in merged.items() if v is not None},
            "stream": self.stream if stream is None else stream,
            "verify": self.verify if verify is None else verify,
            "cert": self.cert if cert is None else cert,
        }


@functools.lru_cache(maxsize=256)
def _prepared_url(url: str) -> str:
    """The URL as requests prepares it (checked, IDNA-encoded, quoted); the same few recur."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


class StreamedResponse(requests.Response):
    """A response whose chunked body, streamed (``iter_content(chunk_size=None)``), is read
    with one buffered read per network read (kimi/upstream/chunked.py) instead of urllib3's
    several reads per chunk: Kimi sends a chunk per event. Anything else reads as usual."""

    def iter_content(self, chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator:
        if chunk_size is None and not decode_unicode and not self._content_consumed:
            if can_read_chunked(self):
                return iter_chunked(self)
        return super().iter_content(chunk_size, decode_unicode)


class _OneWrite:
    """A connection that sends a request's head and a small body in one write, not two (urllib3
    sends the body on its own): one packet, and on kimi.com one TLS record, fewer per call, and
    the far end is woken once. A large or streamed body (an upload) goes out as before."""

    _held: list[bytes] | None = None

    def request(
        self, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any
    ) -> None:
        if body is not None and not (isinstance(body, bytes) and len(body) <= ONE_WRITE_BODY_LIMIT):
            super().request(method, url, body=body, headers=headers, **kw)
            return
        self._held = []
        try:
            super().request(method, url, body=body, headers=headers, **kw)
            data = b"".join(self._held)
        finally:
            self._held = None
        super().send(data)

    def send(self, data: Any) -> None:
        if self._held is not None and isinstance(data, bytes):
            self._held.append(data)
            return
        super().send(data)


class _HTTPConnection(_OneWrite, HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = StreamedResponse  # a subclass adding one method: no state differs
        return response


class _NoCookies(requests.cookies.cookielib.DefaultCookiePolicy):
    def set_ok(self, cookie, request):  # noqa: ARG002 - signature fixed by cookielib
        return False


_NO_COOKIES = _NoCookies()
# Shared by every prepared request: its policy refuses every cookie, so it stays empty.
_NO_COOKIE_JAR = RequestsCookieJar(_NO_COOKIES)


def browser_headers(base_url: str) -> dict[str, str]:
    """Headers the Kimi web client sends on every call."""
    return {
        "Origin": base_url,
        "Referer": base_url + "/",
        "R-Timezone": TIMEZONE,
        "X-Msh-Platform": "web",
    }


def session_headers(session: Session) -> dict[str, str]:
    """The credential and identity headers of one account, the same in both generations."""
    return {
        "Authorization": f"Bearer {session.access_token}",
        "X-Msh-Device-Id": session.device_id,
        "X-Msh-Session-Id": session.session_id,
        "X-Traffic-Id": session.user_id,
    }


def stable_digits(seed: str, length: int = 19) -> str:
    """A device id that stays the same for one account, when its token carries none."""
    number = int(hashlib.sha256(seed.encode("utf-8")).hexdigest(), 16)
    return str(number)[:length]


@contextlib.contextmanager
def translate_transport_errors(what: str) -> Iterator[None]:
    """Turn ``requests`` failures during ``what`` into the service's errors."""
    try:
        yield
    except KimiError:
        raise
    except requests.Timeout as exc:
        raise UpstreamTimeout(f"Kimi did not answer in time ({what}).") from exc
    except requests.exceptions.ChunkedEncodingError as exc:
        raise UpstreamCut(f"Kimi's answer was cut off ({what}).") from exc
    except requests.RequestException as exc:
        # requests reports a read timeout in the middle of a stream as a ConnectionError.
        if exc.args and isinstance(exc.args[0], ReadTimeoutError):
            raise UpstreamTimeout(f"Kimi went silent for too long ({what}).") from exc
        log.warning("Kimi unreachable during %s: %s", what, type(exc).__name__)
        raise UpstreamError(
            f"Kimi could not be reached ({what}).", code="upstream_unreachable"
        ) from exc


def error_for(status: int | None, code: str, message: str, retry_after: float) -> KimiError:
    """Map an upstream failure (HTTP status and/or error code) to the service's error, which
    keeps Kimi's message as ``said``."""
    message = (message or "no message").strip()[:MESSAGE_LIMIT]
    error = _error_for(status, (code or "").lower(), message, retry_after)
    error.said = message
    return error


def _error_for(status: int | None, code: str, message: str, retry_after: float) -> KimiError:
    if status == 401 or code in ("unauthenticated", "auth.token.invalid"):
        return UpstreamAuthRejected(f"Kimi rejected the account's token: {message}")
    if status == 429 or code == "resource_exhausted" or "rate_limit" in code:
        return RateLimited(f"Kimi rate-limited this account: {message}", retry_after=retry_after)
    if status == 409 or code in ("aborted", "chat.user_stream_pushing"):
        return ConversationBusy(f"Kimi is still answering in this conversation: {message}")
    if status == 404 or code in (
        "not_found",
        "chat.not_found",
        "permission_denied",
        "chat.forbidden",
    ):
        return NotFound(f"Kimi does not know this conversation: {message}", param="conversation_id")
    if status == 504 or code == "deadline_exceeded":
        return UpstreamTimeout(f"Kimi timed out: {message}")
    said = f"HTTP {status}" if status else ""
    if said and said not in message:
        message = f"{message} ({said})"
    return UpstreamError(f"Kimi failed: {message}")


def retry_after_seconds(response: requests.Response, default: float) -> float:
    """Kimi's Retry-After header when it sends one, else ``default``."""
    raw = response.headers.get("Retry-After", "")
    try:
        return max(1.0, float(raw))
    except ValueError:
        return default


def json_or_none(response: requests.Response) -> dict | None:
    """The response's JSON object, or None when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def raise_for_status(response: requests.Response, default_retry_after: float) -> None:
    """Raise the service's error for a failed answer, read from either generation's body.

    ``web`` answers ``{"code", "message"}`` (or nested under ``error``); ``legacy`` answers
    ``{"error_type", "message"}``.
    """
    if response.status_code < 400:
        return
    data = json_or_none(response) or {}
    error = data.get("error") if isinstance(data.get("error"), dict) else data
    retry_after = retry_after_seconds(response, default_retry_after)
    raise error_from_body(error, retry_after, status=response.status_code)


def error_from_body(error: Any, retry_after: float, status: int | None = None) -> KimiError:
    """The service's error for an upstream error object, in-stream or in a failed answer.

    Either generation's shape: ``{"code", "message"}`` or ``{"error_type", "message"}``, and
    some clients saw ``msg`` for the message.
    """
    if not isinstance(error, dict):
        error = {"message": str(error or "")}
    code = error.get("code") or error.get("error_type") or ""
    message = error.get("message") or error.get("msg") or (f"HTTP {status}" if status else "")
    return error_for(status, str(code), str(message), retry_after)


def json_body(response: requests.Response, what: str, default_retry_after: float) -> dict:
    """The JSON object of a successful answer; an error for anything else."""
    raise_for_status(response, default_retry_after)
    data = json_or_none(response)
    if data is None:
        raise UpstreamError(f"Kimi answered something that is not JSON while {what}.")
    return data
