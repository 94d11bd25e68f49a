"""A tiny result-file server for archive tests: deterministic bytes, failures, held downloads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

CHUNK = 4096


def content(name: str, size: int = 20_000) -> bytes:
    """The bytes served for ``name``: different for every name, the same every time."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def digest(name: str, size: int = 20_000) -> str:
    return hashlib.sha256(content(name, size)).hexdigest()


class FileServer:
    """``GET /f/{name}``; ``fail_once`` names answer 503 the first time; ``hold`` names
    send their first chunk, then wait for ``release`` before the rest."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.fail_once: set[str] = set()
        self.hold: set[str] = set()
        self.held = asyncio.Event()  # a held download has started
        self.release = asyncio.Event()
        self.sizes: dict[str, int] = {}

    def size(self, name: str) -> int:
        return self.sizes.get(name, 20_000)

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.requests[name] += 1
        if name in self.fail_once and self.requests[name] == 1:
            return Response("try later", status_code=503)
        if name.startswith("missing"):
            return Response("gone", status_code=404)
        body = content(name, self.size(name))
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return StreamingResponse(
            self._chunks(name, body),
            media_type=media_type,
            headers={"Content-Length": str(len(body))},
        )

    async def _chunks(self, name: str, body: bytes) -> AsyncIterator[bytes]:
        yield body[:CHUNK]
        if name in self.hold:
            self.held.set()
            await self.release.wait()
        for start in range(CHUNK, len(body), CHUNK):
            yield body[start : start + CHUNK]

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/f/{name}", self.serve)])


class QuietHandler(BaseHTTPRequestHandler):
    """A stdlib request handler that logs nothing."""

    def log_message(self, *args: object) -> None:
        pass


class ThreadedServer:
    """``handler`` served on its own threads, for tests that are not async themselves.

    Leaving ``running()`` sets ``release`` (so answers held on it end), then stops.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
