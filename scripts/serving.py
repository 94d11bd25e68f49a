"""Serve an ASGI app with uvicorn on a free port of 127.0.0.1, inside a test or a script.

``async with serving(app) as base_url:`` starts the server, waits until it
accepts connections (never a fixed sleep) and stops it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

__all__ = ["EmbeddedServer", "listen", "serving"]


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that says when it serves, and leaves signals to its host."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port))
    # Sockets handed to uvicorn miss asyncio's TCP_NODELAY; without it every keep-alive
    # answer waits out the peer's delayed ACK (~40 ms on Linux). Accepted sockets inherit it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve any ASGI app with uvicorn on a free port of ``host``; yields its base URL."""
    sock = listen(host, 0)
    server = EmbeddedServer(
        uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
    )
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({serve, ready}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if not server.ready.is_set():
            ready.cancel()
            await serve  # raises what stopped it
            raise RuntimeError(f"uvicorn stopped before serving on {host}")
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serve
        sock.close()
