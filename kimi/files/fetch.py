"""Fetch a file from a user-supplied URL without letting the URL reach our own network.

The rules, applied on the first request and again on every redirect hop:

* only ``http`` and ``https``, and no ``user:password@`` in the URL;
* the host is resolved once, with the injected resolver; if any address it resolves to is not
  public (loopback, private, link-local and cloud metadata, shared, multicast, reserved,
  unspecified, or a v4 address embedded in v6 that is one of these) the URL is refused;
* the connection then goes to exactly the address that was checked (``PinnedAddressAdapter``),
  so a DNS answer that changes between check and connect (DNS rebinding) cannot redirect it;
  the ``Host`` header, TLS SNI and certificate verification still use the URL's hostname;
* the body is streamed in chunks and cut off the moment it passes ``max_bytes``;
* the whole fetch has a deadline, and the body a minimum rate (``fetch_budget``): a source that
  trickles is cut off, its connection shut down, instead of holding the request for hours.

Error choices: every failure is a ``BadRequest`` (400), including a timeout, because the slow
or broken party is the user's own source, not Kimi; retrying against us will not fix it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator
from email.message import Message
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, ReadTimeoutError

from ..errors import BadRequest
from .content_type import charset_param, media_type
from .fetch_budget import FetchBudget, FetchLimits, watch_new_socket

__all__ = [
    "CHUNK_SIZE",
    "FetchLimits",
    "FetchedFile",
    "PinnedAddressAdapter",
    "SafeFetcher",
    "is_public_address",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
USER_AGENT = "kimi-free-api file fetcher"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ALLOWED_SCHEMES = ("http", "https")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_NAME = "document"
DEFAULT_LIMITS = FetchLimits()
# What a broken or cut-off body raises from urllib3's read1 (socket, TLS and protocol errors).
_BODY_ERRORS = (requests.RequestException, HTTPError, OSError)
# NAT64 gateways translate 64:ff9b::a.b.c.d to the IPv4 address a.b.c.d (RFC 6052).
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]
AddressPolicy = Callable[[IPAddress], bool]


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable, checking v4 addresses embedded in v6 too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(is_public_address(inner) for inner in embedded)
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address.sixtofour:
        return [address.sixtofour]
    if address.teredo:
        return list(address.teredo)
    if address in NAT64_PREFIX:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


class _PinnedRequest(PreparedRequest):
    """A prepared request that carries the address its host was vetted to."""

    pinned_address: str | None = None
    server_hostname: str | None = None


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        watch_new_socket(self.sock)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        watch_new_socket(self.sock)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to the request's vetted address instead of resolving its hostname again.

    The urllib3 pool is keyed by that address; for https the pool also gets the hostname as
    ``server_hostname`` (SNI) and ``assert_hostname`` (certificate check). A request that
    carries no vetted address is refused rather than sent. Every connection it opens is put
    under the budget of the fetch that opened it (``FetchBudget.connecting``).
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # An instance attribute: urllib3's module-level mapping stays as it is for everyone else.
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        address = getattr(request, "pinned_address", None)
        hostname = getattr(request, "server_hostname", None)
        if not address or not hostname:
            raise ValueError("refusing to send a request whose address was not vetted")
        host_params["host"] = address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


class FetchedFile:
    """An open response body, streamed in chunks and cut off past ``max_bytes`` or once its
    ``budget`` is spent.

    Use as a context manager, or call ``close()``; read it once, with ``iter_chunks()`` or
    ``read()``.
    """

    def __init__(self, response: requests.Response, url: str, max_bytes: int, budget: FetchBudget):
        self.url = url
        self.host = urlsplit(url).hostname or ""
        self.max_bytes = max_bytes
        self.budget = budget
        declared_type = response.headers.get("Content-Type")
        self.content_type = media_type(declared_type) or DEFAULT_CONTENT_TYPE
        self.charset = charset_param(declared_type)
        self.length = _content_length(response.headers.get("Content-Length"))
        self.filename = _filename(response.headers.get("Content-Disposition"), url)
        self._response = response
        self._chunks: Iterator[bytes] | None = None
        self._buffer = bytearray()
        self.bytes_read = 0

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the body in chunks of at most ``chunk_size``; raise ``BadRequest`` as soon as
        it passes ``max_bytes`` or the budget is spent."""
        self.budget.body_started()
        try:
            while chunk := self._read_some(chunk_size):
                self.bytes_read += len(chunk)
                if self.bytes_read > self.max_bytes:
                    raise _too_large(self.host, self.max_bytes)
                self.budget.received(len(chunk))
                yield chunk
            # A body cut off by the budget can end like a whole one (no Content-Length).
            self.budget.check()
        finally:
            self.close()

    def _read_some(self, chunk_size: int) -> bytes:
        # read1 returns what has arrived; read(n) would wait for all n bytes, however slowly
        # they come, and the budget would only learn of them at the end.
        try:
            return self._response.raw.read1(chunk_size, decode_content=True)
        except _BODY_ERRORS as exc:
            raise self.budget.failure or _broken_body(self.host, exc) from exc

    def read(self, size: int = -1) -> bytes:
        """File-like ``read``: up to ``size`` bytes, or the whole (bounded) rest if negative."""
        if self._chunks is None:
            self._chunks = self.iter_chunks()
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        size = len(self._buffer) if size < 0 else size
        data = bytes(self._buffer[:size])
        del self._buffer[:size]  # bytearray: drops the front without copying the rest twice
        return data

    def close(self) -> None:
        self._response.close()
        self.budget.close()

    def __enter__(self) -> FetchedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SafeFetcher:
    """Opens user-supplied URLs safely: public addresses only, bounded size and redirects.

    ``timeout`` is requests' ``(connect, read)`` pair, per socket operation; ``limits`` bound
    the whole fetch. ``allow_private`` lifts only the address check (for tests and trusted
    deployments); ``is_allowed_address`` replaces the policy.
    ``session`` is used only as a transport: the fetcher mounts ``PinnedAddressAdapter`` on it,
    never sends its default headers, auth or cookies, and makes it store no cookies.
    """

    def __init__(
        self,
        max_bytes: int,
        timeout: tuple[float, float] = (10.0, 30.0),
        max_redirects: int = 3,
        allow_private: bool = False,
        resolver: Resolver = socket.getaddrinfo,
        session: requests.Session | None = None,
        *,
        is_allowed_address: AddressPolicy = is_public_address,
        verify: bool | str = True,
        limits: FetchLimits = DEFAULT_LIMITS,
    ):
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.limits = limits
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self.resolver = resolver
        self.is_allowed_address = is_allowed_address
        self.verify = verify
        self.session = session if session is not None else requests.Session()
        self.session.trust_env = False
        # An empty allow-list blocks every domain: sources cannot plant cookies in the session.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = PinnedAddressAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def open(self, url: str, name: str | None = None) -> FetchedFile:
        """Open ``url``, following redirects; the caller must close the result.

        ``name`` names the file in errors (else the URL's last path segment does).
        """
        name = name or _filename(None, url) or DEFAULT_NAME
        budget = FetchBudget(self.limits, name, _host(url))
        try:
            return self._follow(url, budget)
        except BaseException:
            budget.close()
            raise

    def _follow(self, url: str, budget: FetchBudget) -> FetchedFile:
        for _ in range(self.max_redirects + 1):
            response = self._send(url, budget)
            if response.status_code not in REDIRECT_STATUSES:
                return self._accept(response, url, budget)
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise BadRequest(f"{_host(url)} answered a redirect without a Location header.")
            url = urljoin(url, location)
        raise BadRequest(
            f"Too many redirects while fetching the file (more than {self.max_redirects}); "
            f"the last one pointed at {_host(url)}.",
            code="too_many_redirects",
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, url: str, budget: FetchBudget) -> requests.Response:
        hostname, port, host_header = _check_url(url)
        address = self._vetted_address(hostname, port)
        request = _PinnedRequest()
        request.prepare(
            method="GET",
            url=url,
            headers={
                "Host": host_header,
                "User-Agent": USER_AGENT,
                "Accept": "*/*",
                # Ask for the bytes as stored: the size limit then also bounds what we decode.
                "Accept-Encoding": "identity",
                # A connection serves one fetch only: its socket is watched by that fetch's budget.
                "Connection": "close",
            },
        )
        request.pinned_address = str(address)
        request.server_hostname = hostname
        connect_timeout, read_timeout = self.timeout
        remaining = budget.remaining()
        try:
            with budget.connecting():
                return self.session.send(
                    request,
                    stream=True,
                    timeout=(min(connect_timeout, remaining), min(read_timeout, remaining)),
                    allow_redirects=False,
                    verify=self.verify,
                    proxies={},
                )
        except requests.RequestException as exc:
            budget.check()  # a spent budget is the reason, whatever the transport saw
            raise _send_error(hostname, exc) from exc

    def _vetted_address(self, hostname: str, port: int) -> IPAddress:
        addresses = self._resolve(hostname, port)
        if not self.allow_private:
            refused = [a for a in addresses if not self.is_allowed_address(a)]
            if refused:
                log.info("refused to fetch from %s: resolves to %s", hostname, refused[0])
                raise BadRequest(
                    f"Fetching files from {hostname} is not allowed: it resolves to "
                    f"{_describe(refused[0])}, which is not a public address.",
                    code="file_address_not_allowed",
                )
        return addresses[0]

    def _resolve(self, hostname: str, port: int) -> list[IPAddress]:
        try:
            return [_parse_address(hostname)]
        except ValueError:
            pass
        try:
            answers = self.resolver(hostname, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise _unreachable(hostname) from exc
        addresses = [_parse_address(str(answer[4][0])) for answer in answers]
        if not addresses:
            raise _unreachable(hostname)
        return addresses

    def _accept(self, response: requests.Response, url: str, budget: FetchBudget) -> FetchedFile:
        host = _host(url)
        if not 200 <= response.status_code < 300:
            response.close()
            raise BadRequest(
                f"Could not fetch the file: {host} answered HTTP {response.status_code}.",
                code="file_fetch_failed",
            )
        fetched = FetchedFile(response, url, self.max_bytes, budget)
        if fetched.length is not None and fetched.length > self.max_bytes:
            fetched.close()
            raise _too_large(host, self.max_bytes)
        return fetched


def _check_url(url: str) -> tuple[str, int, str]:
    """The URL's ASCII hostname, port and ``Host`` header value, or ``BadRequest``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"The file URL is malformed: {exc}.") from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise BadRequest(
            f"Only http and https file URLs are supported, not {parts.scheme or 'no scheme'!r}."
        )
    if not parts.hostname:
        raise BadRequest("The file URL has no host.")
    if "@" in parts.netloc:
        raise BadRequest(
            f"File URLs must not contain a user name or password (host {parts.hostname})."
        )
    try:
        hostname = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise BadRequest(f"The file URL's host {parts.hostname!r} is not a valid name.") from exc
    default_port = 443 if parts.scheme.lower() == "https" else 80
    netloc_host = f"[{hostname}]" if ":" in hostname else hostname
    host_header = netloc_host if port in (None, default_port) else f"{netloc_host}:{port}"
    return hostname, port or default_port, host_header


def _describe(address: IPAddress) -> str:
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if embedded:
        return f"{address} ({', '.join(map(str, embedded))})"
    return str(address)


def _parse_address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.strip("[]"))


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the source"
    except ValueError:
        return "the source"


def _content_length(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit():
        return None
    return int(header)


def _filename(disposition: str | None, url: str) -> str | None:
    """The name from ``Content-Disposition`` (RFC 6266, with ``filename*``), else the URL path."""
    name = None
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        name = message.get_filename()
    if not name:
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    # A name is a label, never a path: drop directories and control characters.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name if name not in ("", ".", "..") else None


def _send_error(hostname: str, exc: requests.RequestException) -> BadRequest:
    if isinstance(exc, requests.Timeout):
        return _timed_out(hostname)
    if isinstance(exc, requests.exceptions.SSLError):
        return BadRequest(
            f"Could not fetch the file: the TLS certificate of {hostname} failed verification.",
            code="file_fetch_failed",
        )
    return _unreachable(hostname)


def _too_large(host: str, max_bytes: int) -> BadRequest:
    return BadRequest(
        f"The file at {host} is larger than the limit of {max_bytes} bytes.",
        code="file_too_large",
    )


def _timed_out(host: str) -> BadRequest:
    return BadRequest(
        f"Could not fetch the file: {host} did not answer in time.", code="file_fetch_timeout"
    )


def _unreachable(host: str) -> BadRequest:
    return BadRequest(
        f"Could not fetch the file: {host} could not be reached.", code="file_fetch_failed"
    )


def _broken_body(host: str, exc: BaseException) -> BadRequest:
    if isinstance(exc, (requests.Timeout, ReadTimeoutError, TimeoutError)):
        return _timed_out(host)
    return BadRequest(
        f"Could not fetch the file: the connection to {host} broke while reading it.",
        code="file_fetch_failed",
    )
