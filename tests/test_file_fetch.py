"""Fetching files from user URLs: SSRF rules, size limits, redirects, and ``data:`` URLs.

All traffic stays on 127.0.0.1. Hostnames are fake and answered by ``FakeResolver``; a test
that must not connect anywhere runs inside ``no_network``, which fails on any request sent.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
import requests
import responses
from helpers import self_signed_certificate
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from kimi.errors import BadRequest
from kimi.files import data_url as data_url_module
from kimi.files import parse_data_url
from kimi.files.fetch import CHUNK_SIZE, PinnedAddressAdapter, SafeFetcher, is_public_address

LIMIT = 1024 * 1024
BIG_FILE_BYTES = 100 * 1024 * 1024
SMALL_BODY = b"hello from a small file\n"
LOOPBACK = ipaddress.ip_address("127.0.0.1")
SLOW_SECONDS = 2.0


# --- a file server on loopback -------------------------------------------------------------


@dataclass
class FileServer:
    port: int
    hits: list[Request] = field(default_factory=list)
    # Slow handlers wait on this; it is set when their test ends, so no handler outlives it.
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "files.example.com", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def paths_hit(self) -> list[str]:
        return [request.path for request in self.hits]


def _generated(total: int, chunk: int = CHUNK_SIZE) -> Iterator[bytes]:
    block = b"x" * chunk
    while total > 0:
        yield block[: min(chunk, total)]
        total -= chunk


def _file_app(server: FileServer):
    @Request.application
    def app(request: Request) -> Response:
        server.hits.append(request)
        path = request.path
        if path == "/small":
            return Response(
                SMALL_BODY,
                content_type="text/plain; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="report.txt"'},
            )
        if path == "/docs/annual%20plan.pdf" or path == "/docs/annual plan.pdf":
            return Response(b"%PDF-1.4", content_type="application/pdf")
        if path == "/sized":
            size = int(request.args["bytes"])
            return Response(
                _generated(size),
                content_type="application/octet-stream",
                headers={"Content-Length": str(size)},
                direct_passthrough=True,
            )
        if path == "/growing":
            # No Content-Length: the dev server sends it chunked, so only streaming can tell.
            return Response(_generated(int(request.args["bytes"])), direct_passthrough=True)
        if path == "/redirect":
            hops = int(request.args["hops"])
            target = "/small" if hops == 0 else f"/redirect?hops={hops - 1}"
            return Response(status=302, headers={"Location": target})
        if path == "/redirect-to":
            return Response(status=307, headers={"Location": request.args["url"]})
        if path == "/headers":
            return Response(b"recorded", content_type="text/plain")
        if path == "/set-cookie":
            return Response(b"ok", headers={"Set-Cookie": "session=planted; Path=/"})
        if path == "/slow":
            server.release.wait(SLOW_SECONDS)
            return Response(b"late")
        if path == "/error":
            return Response(b"boom", status=500)
        return Response(b"not here", status=404)

    return app


def _serve(ssl_context=None) -> Iterator[FileServer]:
    server = FileServer(port=0)
    http_server = make_server(
        "127.0.0.1", 0, _file_app(server), threaded=True, ssl_context=ssl_context
    )
    server.port = http_server.server_port
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http_server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def file_server_instance() -> Iterator[FileServer]:
    yield from _serve()


@pytest.fixture
def file_server(file_server_instance: FileServer) -> Iterator[FileServer]:
    file_server_instance.hits.clear()
    file_server_instance.release.clear()
    yield file_server_instance
    file_server_instance.release.set()


# --- resolvers and fetchers ----------------------------------------------------------------


class FakeResolver:
    """``socket.getaddrinfo`` over a fixed table; records every name it is asked for."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int, type: int = 0):  # noqa: A002 - getaddrinfo's name
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, type, 6, "", (ip, port))
            for ip in self.table[host]
        ]


def loopback_is_public(address) -> bool:
    """A policy for tests: the server's one address counts as public, nothing else private."""
    return address == LOOPBACK or is_public_address(address)


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(
        {
            "files.example.com": ["127.0.0.1"],
            "public.example": ["93.184.216.34"],
            "evil.example": ["169.254.169.254"],
            "internal.example": ["10.0.0.5"],
            "mapped.example": ["::ffff:127.0.0.1"],
            "mixed.example": ["93.184.216.34", "10.0.0.5"],
            "shared.example": ["100.64.0.1"],
            "v6-local.example": ["fe80::1"],
        }
    )


@pytest.fixture
def fetcher(resolver: FakeResolver) -> Iterator[SafeFetcher]:
    """Private addresses allowed, so the loopback server is reachable through fake names."""
    with SafeFetcher(LIMIT, timeout=(2, 5), allow_private=True, resolver=resolver) as fetcher:
        yield fetcher


@pytest.fixture
def strict_fetcher(resolver: FakeResolver) -> Iterator[SafeFetcher]:
    with SafeFetcher(LIMIT, timeout=(2, 5), resolver=resolver) as fetcher:
        yield fetcher


@pytest.fixture
def no_network() -> Iterator[responses.RequestsMock]:
    """Any request that reaches the transport fails the test's expectations (calls recorded)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def fetch_bytes(fetcher: SafeFetcher, url: str) -> bytes:
    with fetcher.open(url) as fetched:
        return b"".join(fetched.iter_chunks())


# --- fetching ------------------------------------------------------------------------------


def test_fetches_a_small_file_with_its_metadata(fetcher: SafeFetcher, file_server: FileServer):
    with fetcher.open(file_server.url("/small")) as fetched:
        assert fetched.content_type == "text/plain"
        assert fetched.length == len(SMALL_BODY)
        assert fetched.filename == "report.txt"
        assert fetched.read() == SMALL_BODY


def test_filename_falls_back_to_the_url_path(fetcher: SafeFetcher, file_server: FileServer):
    with fetcher.open(file_server.url("/docs/annual%20plan.pdf")) as fetched:
        assert fetched.filename == "annual plan.pdf"
        assert fetched.content_type == "application/pdf"


def test_read_with_a_size_returns_the_body_in_pieces(fetcher: SafeFetcher, file_server: FileServer):
    with fetcher.open(file_server.url("/small")) as fetched:
        pieces = iter(lambda: fetched.read(5), b"")
        assert b"".join(pieces) == SMALL_BODY


def test_a_big_file_streams_through_in_bounded_chunks(
    resolver: FakeResolver, file_server: FileServer
):
    fetcher = SafeFetcher(BIG_FILE_BYTES, allow_private=True, resolver=resolver)
    total, largest = 0, 0
    with fetcher.open(file_server.url(f"/sized?bytes={BIG_FILE_BYTES}")) as fetched:
        assert fetched.length == BIG_FILE_BYTES
        for chunk in fetched.iter_chunks():
            total += len(chunk)
            largest = max(largest, len(chunk))
    assert total == BIG_FILE_BYTES
    assert largest <= CHUNK_SIZE


def test_a_body_exactly_at_the_limit_passes(fetcher: SafeFetcher, file_server: FileServer):
    assert len(fetch_bytes(fetcher, file_server.url(f"/growing?bytes={LIMIT}"))) == LIMIT


def test_a_declared_length_over_the_limit_is_refused_before_reading(
    fetcher: SafeFetcher, file_server: FileServer
):
    with pytest.raises(BadRequest) as caught:
        fetcher.open(file_server.url(f"/sized?bytes={10 * LIMIT}"))
    assert caught.value.status == 400
    assert caught.value.code == "file_too_large"
    assert "files.example.com" in caught.value.message
    assert str(LIMIT) in caught.value.message


def test_a_body_growing_past_the_limit_is_cut_off_while_streaming(
    fetcher: SafeFetcher, file_server: FileServer
):
    with fetcher.open(file_server.url(f"/growing?bytes={10 * LIMIT}")) as fetched:
        assert fetched.length is None
        with pytest.raises(BadRequest) as caught:
            for _ in fetched.iter_chunks():
                pass
    assert caught.value.code == "file_too_large"
    assert LIMIT < fetched.bytes_read <= LIMIT + CHUNK_SIZE


@pytest.mark.parametrize("path, status", [("/missing", 404), ("/error", 500)])
def test_a_failing_source_is_a_bad_request_naming_the_status(
    fetcher: SafeFetcher, file_server: FileServer, path: str, status: int
):
    with pytest.raises(BadRequest) as caught:
        fetcher.open(file_server.url(path))
    assert caught.value.status == 400
    assert f"HTTP {status}" in caught.value.message
    assert "files.example.com" in caught.value.message


def test_redirects_are_followed_up_to_the_limit(fetcher: SafeFetcher, file_server: FileServer):
    assert fetch_bytes(fetcher, file_server.url("/redirect?hops=2")) == SMALL_BODY
    assert file_server.paths_hit() == ["/redirect", "/redirect", "/redirect", "/small"]


def test_too_many_redirects_are_refused(fetcher: SafeFetcher, file_server: FileServer):
    with pytest.raises(BadRequest) as caught:
        fetcher.open(file_server.url("/redirect?hops=5"))
    assert caught.value.code == "too_many_redirects"
    assert "more than 3" in caught.value.message
    assert len(file_server.hits) == 4


def test_credentials_of_the_session_are_never_forwarded(
    resolver: FakeResolver, file_server: FileServer
):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer user-secret"
    session.cookies.set("kimi", "account-cookie")
    session.auth = ("user", "pass")
    fetcher = SafeFetcher(LIMIT, allow_private=True, resolver=resolver, session=session)
    fetch_bytes(fetcher, file_server.url("/headers"))
    (seen,) = file_server.hits
    assert "Authorization" not in seen.headers
    assert "Cookie" not in seen.headers
    assert "kimi-free-api" in seen.headers["User-Agent"]
    assert seen.headers["Host"] == f"files.example.com:{file_server.port}"


def test_cookies_set_by_a_source_are_not_sent_back(fetcher: SafeFetcher, file_server: FileServer):
    fetch_bytes(fetcher, file_server.url("/set-cookie"))
    fetch_bytes(fetcher, file_server.url("/headers"))
    assert "Cookie" not in file_server.hits[-1].headers


def test_the_connection_goes_to_the_checked_address_without_resolving_again(
    file_server: FileServer,
):
    # A rebinding resolver: public-looking first, internal afterwards. Only one answer per hop
    # may be used, and the fake name must never reach the system resolver (it would fail).
    answers = iter([["127.0.0.1"], ["10.0.0.5"], ["10.0.0.5"]])
    calls: list[str] = []

    def rebinding(host: str, port: int, type: int = 0):  # noqa: A002
        calls.append(host)
        return [(socket.AF_INET, type, 6, "", (ip, port)) for ip in next(answers)]

    fetcher = SafeFetcher(LIMIT, resolver=rebinding, is_allowed_address=loopback_is_public)
    assert fetch_bytes(fetcher, file_server.url("/small", host="rebind.example")) == SMALL_BODY
    assert calls == ["rebind.example"]
    assert file_server.hits[0].headers["Host"] == f"rebind.example:{file_server.port}"


def test_an_unreachable_source_is_a_bad_request(fetcher: SafeFetcher):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(BadRequest) as caught:
        fetcher.open(f"http://files.example.com:{port}/small")
    assert "could not be reached" in caught.value.message
    assert "files.example.com" in caught.value.message


def test_a_name_that_does_not_resolve_is_a_bad_request(
    fetcher: SafeFetcher, no_network: responses.RequestsMock
):
    with pytest.raises(BadRequest) as caught:
        fetcher.open("http://nowhere.example/file.pdf")
    assert "nowhere.example could not be reached" in caught.value.message
    assert not no_network.calls


def test_a_source_that_does_not_answer_in_time_is_a_bad_request(
    resolver: FakeResolver, file_server: FileServer
):
    fetcher = SafeFetcher(LIMIT, timeout=(2, 0.2), allow_private=True, resolver=resolver)
    with pytest.raises(BadRequest) as caught:
        fetcher.open(file_server.url("/slow"))
    assert caught.value.code == "file_fetch_timeout"
    assert "files.example.com did not answer in time" in caught.value.message


# --- SSRF rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com/report.pdf",
        "file:///etc/passwd",
        "gopher://files.example.com/",
        "files.example.com/report.pdf",
    ],
)
def test_only_http_and_https_are_fetched(
    strict_fetcher: SafeFetcher, no_network: responses.RequestsMock, url: str
):
    with pytest.raises(BadRequest) as caught:
        strict_fetcher.open(url)
    assert "Only http and https" in caught.value.message
    assert not no_network.calls


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@public.example/a.pdf", "https://token@public.example/a.pdf"]
)
def test_urls_with_credentials_are_refused_without_echoing_them(
    strict_fetcher: SafeFetcher, no_network: responses.RequestsMock, url: str
):
    with pytest.raises(BadRequest) as caught:
        strict_fetcher.open(url)
    assert "user name or password" in caught.value.message
    assert "public.example" in caught.value.message
    assert "hunter2" not in caught.value.message and "token" not in caught.value.message
    assert not no_network.calls


@pytest.mark.parametrize(
    "url, refused_address",
    [
        ("http://evil.example/latest/meta-data/", "169.254.169.254"),
        ("http://internal.example/", "10.0.0.5"),
        ("http://mapped.example/", "(127.0.0.1)"),
        ("http://mixed.example/", "10.0.0.5"),
        ("http://shared.example/", "100.64.0.1"),
        ("http://v6-local.example/", "fe80::1"),
        ("http://127.0.0.1/small", "127.0.0.1"),
        ("http://[::1]/small", "::1"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://[::]/", "::"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:169.254.169.254]/", "(169.254.169.254)"),
        ("http://172.16.0.1/", "172.16.0.1"),
        ("https://192.168.1.1/", "192.168.1.1"),
        ("http://[fd00::1]/", "fd00::1"),
        ("http://224.0.0.1/", "224.0.0.1"),
        ("http://240.0.0.1/", "240.0.0.1"),
        ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1 (127.0.0.1)"),
        ("http://[2002:7f00:1::]/", "2002:7f00:1:: (127.0.0.1)"),
    ],
)
def test_non_public_addresses_are_refused_before_connecting(
    strict_fetcher: SafeFetcher, no_network: responses.RequestsMock, url, refused_address
):
    with pytest.raises(BadRequest) as caught:
        strict_fetcher.open(url)
    assert caught.value.status == 400
    assert caught.value.code == "file_address_not_allowed"
    assert "not allowed" in caught.value.message
    assert refused_address in caught.value.message
    assert not no_network.calls


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_public_address_passes_and_the_request_is_pinned_to_it(
    strict_fetcher: SafeFetcher, no_network: responses.RequestsMock, scheme: str
):
    no_network.get(f"{scheme}://public.example/doc.txt", body=b"public")
    assert fetch_bytes(strict_fetcher, f"{scheme}://public.example/doc.txt") == b"public"

    (call,) = no_network.calls
    pool = PinnedAddressAdapter().get_connection_with_tls_context(call.request, verify=True)
    assert pool.host == "93.184.216.34"
    assert call.request.headers["Host"] == "public.example"
    if scheme == "https":
        assert pool.conn_kw["server_hostname"] == "public.example"
        assert pool.assert_hostname == "public.example"


def test_the_adapter_refuses_a_request_whose_address_was_not_vetted(
    strict_fetcher: SafeFetcher, file_server: FileServer
):
    with pytest.raises(requests.exceptions.InvalidURL):
        strict_fetcher.session.get(f"http://127.0.0.1:{file_server.port}/small")
    assert not file_server.hits


def test_allow_private_lifts_only_the_address_check(fetcher: SafeFetcher, file_server: FileServer):
    assert fetch_bytes(fetcher, f"http://127.0.0.1:{file_server.port}/small") == SMALL_BODY
    with pytest.raises(BadRequest, match="user name or password"):
        fetcher.open(f"http://admin:x@127.0.0.1:{file_server.port}/small")


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/small",
        "http://[::1]:{port}/small",
        "http://evil.example/latest/meta-data/",
        "http://internal.example:{port}/small",
        "ftp://files.example.com/small",
    ],
)
def test_every_redirect_hop_is_checked_again(
    resolver: FakeResolver, file_server: FileServer, target: str
):
    # public.example answers the loopback server, and the policy treats exactly that address
    # as public, so the first hop really happens and only the redirect target is judged.
    resolver.table["public.example"] = ["127.0.0.1"]
    fetcher = SafeFetcher(LIMIT, resolver=resolver, is_allowed_address=loopback_is_public)
    location = quote(target.format(port=file_server.port), safe="")
    with pytest.raises(BadRequest) as caught:
        fetcher.open(file_server.url(f"/redirect-to?url={location}", host="public.example"))
    assert caught.value.status == 400
    assert "not allowed" in caught.value.message or "Only http and https" in caught.value.message
    assert file_server.paths_hit() == ["/redirect-to"]


def test_a_redirect_to_an_allowed_address_is_followed(
    resolver: FakeResolver, file_server: FileServer
):
    resolver.table["public.example"] = ["127.0.0.1"]
    fetcher = SafeFetcher(LIMIT, resolver=resolver, is_allowed_address=loopback_is_public)
    location = quote(file_server.url("/small"), safe="")
    url = file_server.url(f"/redirect-to?url={location}", host="public.example")
    assert fetch_bytes(fetcher, url) == SMALL_BODY
    assert [hit.headers["Host"].split(":")[0] for hit in file_server.hits] == [
        "public.example",
        "files.example.com",
    ]


# --- https: SNI and certificate checks use the hostname, not the pinned address ------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[FileServer, str]]:
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"), "files.example.com")
    for server in _serve(ssl_context=(cert, key)):
        yield server, cert


def test_https_verifies_the_certificate_against_the_hostname(
    resolver: FakeResolver, tls_server: tuple[FileServer, str]
):
    server, cert = tls_server
    fetcher = SafeFetcher(LIMIT, allow_private=True, resolver=resolver, verify=cert)
    url = server.url("/small", scheme="https")
    assert fetch_bytes(fetcher, url) == SMALL_BODY


def test_https_refuses_a_certificate_for_another_name(
    resolver: FakeResolver, tls_server: tuple[FileServer, str]
):
    server, cert = tls_server
    resolver.table["other.example"] = ["127.0.0.1"]
    fetcher = SafeFetcher(LIMIT, allow_private=True, resolver=resolver, verify=cert)
    with pytest.raises(BadRequest) as caught:
        fetcher.open(server.url("/small", host="other.example", scheme="https"))
    assert "certificate of other.example" in caught.value.message


# --- data URLs -----------------------------------------------------------------------------

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
PNG_B64 = base64.b64encode(PNG_BYTES).decode()


@pytest.mark.parametrize(
    "payload",
    [
        PNG_B64,
        "\n".join(PNG_B64[i : i + 16] for i in range(0, len(PNG_B64), 16)),
        " " + PNG_B64 + "\r\n",
        quote(PNG_B64, safe=""),
    ],
    ids=["plain", "wrapped-lines", "surrounding-whitespace", "percent-encoded"],
)
def test_data_url_decodes_base64(payload: str):
    parsed = parse_data_url(f"data:image/png;base64,{payload}", max_bytes=LIMIT)
    assert parsed.content_type == "image/png"
    assert parsed.data == PNG_BYTES
    assert parsed.filename is None


def test_data_url_keeps_a_filename_parameter():
    url = f"data:Application/PDF;name=annual%20plan.pdf;base64,{PNG_B64}"
    parsed = parse_data_url(url, max_bytes=LIMIT)
    assert parsed.content_type == "application/pdf"
    assert parsed.filename == "annual plan.pdf"


@pytest.mark.parametrize(
    "url, content_type, data",
    [
        ("data:text/plain,hello%20world", "text/plain", b"hello world"),
        ("data:,plain", "text/plain", b"plain"),
    ],
)
def test_data_url_without_base64_is_percent_decoded(url: str, content_type: str, data: bytes):
    parsed = parse_data_url(url, max_bytes=LIMIT)
    assert (parsed.content_type, parsed.data) == (content_type, data)


@pytest.mark.parametrize("payload", ["aGVsbG8", "aGVs!G8=", "aGVs-G8_", "====", "aGVsbG8=aGVs"])
def test_data_url_rejects_malformed_base64(payload: str):
    with pytest.raises(BadRequest, match="base64 data is malformed"):
        parse_data_url(f"data:text/plain;base64,{payload}", max_bytes=LIMIT)


@pytest.mark.parametrize(
    "url, message",
    [
        ("https://files.example.com/a.png", "Expected a data URL"),
        ("", "Expected a data URL"),
        ("data:image/png;base64", "no ','"),
        ("data:image;base64,AAAA", "media type 'image' is invalid"),
    ],
)
def test_data_url_rejects_what_is_not_a_data_url(url: str, message: str):
    with pytest.raises(BadRequest, match=message):
        parse_data_url(url, max_bytes=LIMIT)


@pytest.mark.parametrize("size, accepted", [(99, True), (100, True), (101, False)])
def test_data_url_enforces_the_decoded_size_limit(size: int, accepted: bool):
    url = "data:application/octet-stream;base64," + base64.b64encode(b"z" * size).decode()
    if accepted:
        assert len(parse_data_url(url, max_bytes=100).data) == size
    else:
        with pytest.raises(BadRequest, match="larger than the limit of 100 bytes"):
            parse_data_url(url, max_bytes=100)


def test_data_url_rejects_a_huge_payload_before_decoding(monkeypatch: pytest.MonkeyPatch):
    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded a payload that was already too large")

    monkeypatch.setattr(data_url_module.base64, "b64decode", must_not_decode)
    url = "data:application/octet-stream;base64," + "A" * (8 * LIMIT)
    with pytest.raises(BadRequest) as caught:
        parse_data_url(url, max_bytes=LIMIT)
    assert caught.value.code == "file_too_large"


@pytest.mark.parametrize(
    "allowed_types",
    [{"image/png", "application/pdf"}, lambda media_type: media_type.startswith("image/")],
    ids=["set", "predicate"],
)
def test_data_url_rejects_unsupported_types(allowed_types):
    assert parse_data_url(f"data:image/png;base64,{PNG_B64}", LIMIT, allowed_types).data
    with pytest.raises(BadRequest) as caught:
        parse_data_url("data:application/x-msdownload;base64,TVqQ", LIMIT, allowed_types)
    assert caught.value.code == "unsupported_file_type"
    assert "application/x-msdownload" in caught.value.message
