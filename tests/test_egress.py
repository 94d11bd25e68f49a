"""The archive's SSRF guard where connections are made: resolve once, vet, connect to
the vetted address (DNS rebinding), TLS still checked against the host name.

Nothing here leaves the machine: names resolve through an injected resolver, and
the "network" under the client routes each address it is asked for to a loopback
server (and records the address), so a test can see exactly where a connection went.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scripts.fake_upstream import serving
from server.archive.download import NetworkError, PrivateAddress, download, redact_url
from server.archive.egress import archive_client
from server.archive.folder import FolderStorage, archive_path

PUBLIC = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1::1"
VIDEO = b"public video bytes" * 100
SECRET = b"internal secret"
MAX = 1_000_000


class Resolver:
    """Answers from a table; ``then`` is what later lookups of a name get (rebinding)."""

    def __init__(self, table: dict[str, list[str]], then: dict[str, list[str]] | None = None):
        self.table, self.then = table, then or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        later = self.calls.count(host) > 0 and host in self.then
        self.calls.append(host)
        return (self.then if later else self.table)[host]


class Router(httpcore.AsyncNetworkBackend):
    """The world's network: each address goes to one loopback port; a host *name*
    handed down is resolved here again, the way the operating system would."""

    def __init__(self, routes: dict[str, int], resolver: Resolver | None = None) -> None:
        self.routes, self.resolver = routes, resolver
        self.asked: list[str] = []
        self.loopback = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        if host not in self.routes and self.resolver is not None:
            host = (await self.resolver(host, port))[0]  # a second lookup
        if host not in self.routes:
            raise httpcore.ConnectError(f"no route to {host}")
        return await self.loopback.connect_tcp("127.0.0.1", self.routes[host], timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def files_app(body: bytes, hits: list[str]) -> Starlette:
    async def clip(request: Request) -> Response:
        hits.append(request.url.path)
        return Response(body, media_type="video/mp4")

    async def untyped(request: Request) -> Response:
        hits.append(request.url.path)
        return Response(body)

    async def redirect(request: Request) -> Response:
        hits.append(request.url.path)
        return RedirectResponse(request.query_params["to"], status_code=302)

    return Starlette(
        routes=[
            Route("/clip.mp4", clip),
            Route("/secret", clip),
            Route("/untyped", untyped),
            Route("/redirect", redirect),
        ]
    )


@pytest.fixture
async def public() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []
    async with serving(files_app(VIDEO, hits)) as base:
        yield int(base.rsplit(":", 1)[1]), hits


@pytest.fixture
async def internal() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []
    async with serving(files_app(SECRET, hits)) as base:
        yield int(base.rsplit(":", 1)[1]), hits


def guarded(
    resolver: Resolver, router: httpcore.AsyncNetworkBackend, allow_private: bool = False
) -> httpx.AsyncClient:
    return archive_client(
        allow_private=allow_private,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(),
        resolve=resolver,
        network=router,
    )


async def fetch(client: httpx.AsyncClient, url: str, tmp_path: Path) -> Any:
    async with client:
        return await download(url, FolderStorage(tmp_path), http=client, max_bytes=MAX)


def stored(tmp_path: Path, got: Any) -> bytes:
    return archive_path(tmp_path, got.sha256).read_bytes()


async def test_the_connection_goes_to_the_vetted_address_not_a_second_answer(
    public, internal, tmp_path
):
    (public_port, public_hits), (internal_port, internal_hits) = public, internal
    # A rebinding DNS server: a public answer for the check, loopback afterwards.
    dns = Resolver({"rebind.test": [PUBLIC]}, then={"rebind.test": ["127.0.0.1"]})
    router = Router({PUBLIC: public_port, "127.0.0.1": internal_port}, resolver=dns)

    got = await fetch(guarded(dns, router), f"http://rebind.test:{public_port}/secret", tmp_path)

    assert stored(tmp_path, got) == VIDEO
    assert dns.calls == ["rebind.test"]  # resolved once
    assert router.asked == [PUBLIC]  # and connected to what was vetted
    assert internal_hits == [] and public_hits == ["/secret"]


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.1"],
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["224.0.0.251"],
        ["fe80::1%eth0"],
        ["fd00::1"],
        ["fec0::1"],
        ["2002:7f00:1::"],  # 6to4 wrapping 127.0.0.1
        [PUBLIC, "10.0.0.1"],  # one private answer among public ones is enough
    ],
)
async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(
    tmp_path, addresses
):
    router = Router({})
    with pytest.raises(PrivateAddress) as caught:
        await fetch(
            guarded(Resolver({"cdn.test": addresses}), router),
            "http://cdn.test/v.mp4?X-Tos-Signature=SECRETSIG",
            tmp_path,
        )
    assert router.asked == []
    assert caught.value.permanent
    assert caught.value.url == "http://cdn.test/v.mp4"
    assert "SECRETSIG" not in str(caught.value)
    assert "ARCHIVE_ALLOW_PRIVATE=on" in caught.value.message


async def test_a_private_name_is_fetched_when_allowed(public, tmp_path):
    port, _hits = public
    router = Router({"10.0.0.1": port})
    client = guarded(Resolver({"cdn.test": ["10.0.0.1"]}), router, allow_private=True)
    got = await fetch(client, f"http://cdn.test:{port}/clip.mp4", tmp_path)
    assert stored(tmp_path, got) == VIDEO
    assert router.asked == ["10.0.0.1"]


async def test_an_ip_literal_is_vetted_without_a_lookup(public, tmp_path):
    port, _hits = public
    dns, router = Resolver({}), Router({PUBLIC: port})
    got = await fetch(guarded(dns, router), f"http://{PUBLIC}:{port}/clip.mp4", tmp_path)
    assert got.bytes == len(VIDEO)
    assert dns.calls == [] and router.asked == [PUBLIC]


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1/latest/meta-data", "http://internal.test/admin?token=t"]
)
async def test_every_redirect_hop_is_vetted(public, tmp_path, target):
    port, hits = public
    dns = Resolver({"public.test": [PUBLIC], "internal.test": ["10.1.2.3"]})
    router = Router({PUBLIC: port})
    start = f"http://public.test:{port}/redirect?to={target}"
    with pytest.raises(PrivateAddress) as caught:
        await fetch(guarded(dns, router), start, tmp_path)
    assert router.asked == [PUBLIC] and hits == ["/redirect"]
    assert caught.value.url == redact_url(target)


async def test_a_public_redirect_chain_is_followed(public, tmp_path):
    port, hits = public
    dns = Resolver({"public.test": [PUBLIC], "cdn.test": [PUBLIC_V6]})
    router = Router({PUBLIC: port, PUBLIC_V6: port})
    start = f"http://public.test:{port}/redirect?to=http://cdn.test:{port}/clip.mp4"
    got = await fetch(guarded(dns, router), start, tmp_path)
    assert got.bytes == len(VIDEO) and got.content_type == "video/mp4"
    assert router.asked == [PUBLIC, PUBLIC_V6]


async def test_the_next_vetted_address_is_tried_when_one_refuses(public, tmp_path):
    port, _hits = public
    dns = Resolver({"cdn.test": ["203.0.114.1", PUBLIC]})  # the first has no route
    router = Router({PUBLIC: port})
    got = await fetch(guarded(dns, router), f"http://cdn.test:{port}/clip.mp4", tmp_path)
    assert got.bytes == len(VIDEO)
    assert router.asked == ["203.0.114.1", PUBLIC]


async def test_a_dns_failure_is_a_transient_network_error(tmp_path):
    async def broken(host: str, port: int) -> list[str]:
        raise OSError(-3, "Temporary failure in name resolution")

    router = Router({})
    client = archive_client(
        allow_private=False,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(),
        resolve=broken,
        network=router,
    )
    with pytest.raises(NetworkError) as caught:
        await fetch(client, "https://cdn.test/v.mp4", tmp_path)
    assert not caught.value.permanent and router.asked == []
    assert "cannot resolve 'cdn.test'" in caught.value.message


# -- TLS is still verified against the host name ---------------------------------------


@contextlib.asynccontextmanager
async def tls_server(cert: trustme.LeafCert, sni: list[str | None]) -> AsyncIterator[int]:
    """A one-file HTTPS server on loopback that records the SNI each client sent."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment,return-value]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(VIDEO)}"
            writer.write(head.encode() + b"\r\nConnection: close\r\n\r\n" + VIDEO)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def trusting(ca: trustme.CA, resolver: Resolver) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return archive_client(
        allow_private=True,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(),
        resolve=resolver,
        verify=context,
    )


async def test_tls_is_verified_against_the_name_while_connecting_to_the_address(tmp_path):
    ca, sni = trustme.CA(), []
    dns = Resolver({"files.test": ["127.0.0.1"]})
    async with tls_server(ca.issue_cert("files.test"), sni) as port:
        got = await fetch(trusting(ca, dns), f"https://files.test:{port}/v.mp4", tmp_path)
    assert stored(tmp_path, got) == VIDEO
    assert sni == ["files.test"] and dns.calls == ["files.test"]


async def test_a_certificate_for_another_name_is_refused(tmp_path):
    ca, sni = trustme.CA(), []
    dns = Resolver({"files.test": ["127.0.0.1"]})
    async with tls_server(ca.issue_cert("other.test"), sni) as port:
        with pytest.raises(NetworkError) as caught:
            await fetch(trusting(ca, dns), f"https://files.test:{port}/v.mp4", tmp_path)
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert list(tmp_path.rglob("*")) == []
