"""Outbound connections of the archive: resolve once, vet, connect to what was vetted.

Result URLs come from callbacks, so they are untrusted: a URL must not make
taskhook fetch from loopback, the private network or a cloud metadata
address (SSRF). Vetting a host name and then letting the HTTP client resolve
it again when it connects is not enough: a DNS server that answers a public
address first and a private one a moment later (DNS rebinding) slips past.
So the check lives where the connection is made: ``VettedNetwork`` is the
network backend under the archive's HTTP client; it resolves each host once,
refuses the connection unless every address is public, and connects to the
vetted address itself. TLS still runs against the host name (httpcore passes
the URL's host as SNI and certificate name), so HTTPS is verified as usual.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from server.errors import ArchiveError

#: ``resolve(host, port)`` -> the host's addresses, as text (tests inject their own).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(ArchiveError):
    """The destination is not a public address; a retry cannot help."""

    reason = "private_address"
    permanent = True

    def __init__(self, host: str, address: str) -> None:
        self.host, self.address = host, address
        super().__init__(
            f"{host!r} resolves to {address}, which is not a public address; "
            "set ARCHIVE_ALLOW_PRIVATE=on to allow it"
        )


async def system_resolve(host: str, port: int) -> list[str]:
    """The operating system's answer for ``host`` (every address, in its order)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: str) -> bool:
    """Globally routable unicast. ``is_global`` already excludes private, loopback,
    link-local, unspecified and shared (100.64/10) ranges; it does not exclude
    multicast, nor IPv6 site-local, nor a private IPv4 address wrapped in IPv6."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if ip.is_site_local or (embedded is not None and not is_public(str(embedded))):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


class VettedNetwork(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses it has vetted.

    Guarantees: each connection resolves its host exactly once (an IP literal
    is not resolved); unless ``allow_private``, every address of the answer
    must be public or ``AddressRefused`` is raised before any connection is
    attempted; the socket is opened to one of those same addresses, never to
    the name. ``network`` is the backend that opens sockets (tests route it).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolve or system_resolve
        self._network = network or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[str]:
        """The vetted addresses to connect to for ``host``."""
        try:
            found = [str(ipaddress.ip_address(host))]
        except ValueError:
            found = await self._lookup(host, port)
        if not self.allow_private:
            for address in found:
                if not is_public(address):
                    raise AddressRefused(host, address)
        return found

    async def _lookup(self, host: str, port: int) -> list[str]:
        try:
            found = list(dict.fromkeys(await self._resolve(host, port)))
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host!r} resolves to no address")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self.addresses(host, port):
            try:
                return await self._network.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # try the next address of the same answer
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the archive connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class VettedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error translation), over a
    connection pool whose network backend is a ``VettedNetwork``.

    httpx has no public way to hand its transport a network backend, so the
    pool it builds is replaced by an equivalent one that has it. No proxy is
    used: a proxy would resolve the name itself, out of our sight.
    """

    def __init__(
        self,
        network: VettedNetwork,
        *,
        limits: httpx.Limits,
        verify: Any = True,
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network,
        )


def archive_client(
    *,
    allow_private: bool,
    timeout: httpx.Timeout,
    limits: httpx.Limits,
    resolve: Resolver | None = None,
    network: httpcore.AsyncNetworkBackend | None = None,
    verify: Any = True,
) -> httpx.AsyncClient:
    """The HTTP client every archive download goes through (SSRF-safe, see above)."""
    vetted = VettedNetwork(allow_private=allow_private, resolve=resolve, network=network)
    transport = VettedTransport(vetted, limits=limits, verify=verify)
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)
