"""A response leaves in one write: uvicorn's real h11 protocol, our subclass, a recording transport.

uvicorn writes a response's head and its body separately; each ``write`` on
an asyncio transport is a ``send`` system call and, on a small answer, a TCP
segment of its own. ``OneWrite`` joins what a response writes in one go.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from server.http.protocol import OneWrite, protocol_class

REQUEST = b"GET /small HTTP/1.1\r\nhost: example.test\r\n\r\n"


class Transport(asyncio.Transport):
    """Records every write; enough of a socket transport for uvicorn's protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.wrote = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.wrote.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: Any) -> tuple[asyncio.Protocol, Transport]:
    config = uvicorn.Config(app, http=protocol_class(10.0, 30.0), log_config=None)
    config.load()
    protocol = config.http_protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def small(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def until_response_complete(transport: Transport, end: bytes, count: int = 1) -> bytes:
    """What was written once ``end`` has been written ``count`` times in all."""
    while b"".join(transport.writes).count(end) < count:
        transport.wrote.clear()
        await asyncio.wait_for(transport.wrote.wait(), 5)
    return b"".join(transport.writes)


async def test_a_small_response_is_one_write_head_and_body_together() -> None:
    protocol, transport = connect(Starlette(routes=[Route("/small", small)]))
    protocol.data_received(REQUEST)
    response = await until_response_complete(transport, b'{"ok":true}')
    assert len(transport.writes) == 1
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11\r\n" in response


async def test_every_response_of_a_kept_alive_connection_is_one_write() -> None:
    protocol, transport = connect(Starlette(routes=[Route("/small", small)]))
    for count in (1, 2, 3):
        protocol.data_received(REQUEST)
        await until_response_complete(transport, b'{"ok":true}', count)
        assert len(transport.writes) == count
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in transport.writes)


async def test_a_streamed_head_is_not_held_while_the_body_waits() -> None:
    release = asyncio.Event()

    async def chunks() -> Any:
        await release.wait()
        yield b"late"

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), headers={"content-length": "4"})

    protocol, transport = connect(Starlette(routes=[Route("/small", stream)]))
    protocol.data_received(REQUEST)
    head = await until_response_complete(transport, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and not release.is_set()
    release.set()
    assert (await until_response_complete(transport, b"late")).endswith(b"\r\n\r\nlate")


async def test_held_writes_leave_before_the_connection_closes() -> None:
    transport = Transport()
    writes = OneWrite(transport, asyncio.get_running_loop())
    writes.write(b"head ")
    writes.write(b"")
    writes.write(b"body")
    assert transport.writes == []
    writes.close()
    assert transport.writes == [b"head body"] and transport.closed


async def test_held_writes_leave_at_the_next_turn_of_the_loop() -> None:
    transport = Transport()
    writes = OneWrite(transport, asyncio.get_running_loop())
    writes.write(b"100 continue")
    await asyncio.wait_for(transport.wrote.wait(), 5)
    assert transport.writes == [b"100 continue"]
    writes.flush()  # nothing held: nothing written twice
    assert transport.writes == [b"100 continue"]


async def test_nothing_is_written_to_a_closed_connection() -> None:
    transport = Transport()
    writes = OneWrite(transport, asyncio.get_running_loop())
    writes.write(b"late")
    transport.close()
    writes.flush()
    assert transport.writes == []
