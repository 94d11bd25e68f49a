"""Overload against the real server: slow clients are cut off, a limit answers 503 at once,
and running out of file descriptors neither floods the log nor stops the server for good.
On both backends (``[sqlite]``, ``[postgres]``).

Every client runs on loopback and is bounded in number and time.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time

import httpx
import pytest

from server.core.tokens import callback_token

from .harness import API_TOKEN, CALLBACK_SECRET, ServerProcess, eventually
from .payloads import dumps, seedance

pytestmark = pytest.mark.e2e

CALLBACK_PATH = f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedance')}"


async def refused(server: ServerProcess, reason: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{server.url}/metrics")).text
    found = re.search(rf'taskhook_http_refused_total{{reason="{reason}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


class Slowloris:
    """A client that sends a request line, then one more header line every half second."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.dribbling: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        self.dribbling = asyncio.create_task(self._dribble())

    async def _dribble(self) -> None:
        assert self.writer is not None
        n = 0
        while not self.writer.is_closing():
            await asyncio.sleep(0.5)
            n += 1
            self.writer.write(f"X-Slow-{n}: still coming\r\n".encode())
            try:
                await self.writer.drain()
            except ConnectionError:
                return

    async def answer(self) -> bytes:
        """Everything the server sent until it closed the connection (b"reset": reset).

        The server answers 408 and closes; bytes this client sent meanwhile
        make the server's kernel reset the connection (or break the pipe), which
        may discard the 408 before it is read. Either way the client was cut off.
        """
        assert self.reader is not None
        try:
            return await self.reader.read()
        except ConnectionError:  # reset, or a broken pipe: cut off either way
            return b"reset"

    async def close(self) -> None:
        if self.dribbling is not None:
            self.dribbling.cancel()
            await asyncio.gather(self.dribbling, return_exceptions=True)
        if self.writer is not None:
            self.writer.close()


async def test_300_slowloris_clients_do_not_stall_callbacks_and_are_cut_off(tmp_path, database_url):
    server = ServerProcess(
        tmp_path / "t.db", database_url=database_url, env={"HEADER_TIMEOUT": "2"}
    ).start()
    clients = [Slowloris(server.port) for _ in range(300)]
    try:
        await asyncio.gather(*(c.open() for c in clients))
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            answers = await asyncio.gather(
                *(http.post(CALLBACK_PATH, content=dumps(seedance(f"real-{i}"))) for i in range(20))
            )
        assert [a.status_code for a in answers] == [200] * 20

        # Each slow client is answered 408 in the error shape, then disconnected.
        endings = await asyncio.wait_for(asyncio.gather(*(c.answer() for c in clients)), 60)
        answered = [e for e in endings if e != b"reset"]
        assert answered, "no slow client read the 408"
        for ending in answered:
            assert ending.startswith(b"HTTP/1.1 408 "), ending[:80]
            assert b'"code": "request_timeout"' in ending and b"HEADER_TIMEOUT" in ending
        assert await refused(server, "header_timeout") == 300
    finally:
        for c in clients:
            await c.close()
        server.stop()
    lines = [line for line in server.logs().splitlines() if "cut off a client slower" in line]
    assert 1 <= len(lines) <= 10  # one line a second at most, not one per client


async def test_a_body_slower_than_body_timeout_is_cut_off(tmp_path, database_url):
    server = ServerProcess(
        tmp_path / "t.db", database_url=database_url, env={"BODY_TIMEOUT": "1"}
    ).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"success": '
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed, nothing stored
        writer.close()
        assert await refused(server, "body_timeout") == 1
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
            ok = await http.post(CALLBACK_PATH, content=dumps(seedance("after")))
            assert ok.status_code == 200
            tasks = (await http.get("/tasks")).json()["tasks"]
        assert [t["task_id"] for t in tasks] == ["after"]
    finally:
        server.stop()
    assert "Traceback" not in server.logs()


async def test_past_limit_concurrency_new_requests_get_503_at_once(tmp_path, database_url):
    server = ServerProcess(
        tmp_path / "t.db", database_url=database_url, env={"LIMIT_CONCURRENCY": "2"}
    ).start()
    hogs = []
    try:
        for _ in range(2):  # two requests whose bodies never come: both stay in flight
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n".encode()
            )
            await writer.drain()
            hogs.append(writer)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:

            async def overloaded() -> httpx.Response | None:
                answer = await http.get("/tasks")
                return answer if answer.status_code == 503 else None

            answer = await eventually(overloaded, "a 503 once two requests are in flight")
            assert answer.json()["error"]["code"] == "overloaded"
            assert "LIMIT_CONCURRENCY (2)" in answer.json()["error"]["message"]
            assert answer.headers["retry-after"] == "1"
            assert (await http.get("/healthz")).status_code == 200  # never refused

            for writer in hogs:
                writer.close()

            async def served() -> bool:
                return (await http.get("/tasks")).status_code == 200

            await eventually(served, "requests served again once the two are gone")
        assert await refused(server, "overloaded") >= 1
    finally:
        for writer in hogs:
            writer.close()
        server.stop()


def lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


async def test_running_out_of_file_descriptors_logs_once_a_second_and_recovers(
    tmp_path, database_url
):
    server = ServerProcess(
        tmp_path / "t.db",
        database_url=database_url,
        env={"HEADER_TIMEOUT": "120"},
        preexec_fn=lower_fd_limit,
    ).start()
    hogs: list[asyncio.StreamWriter] = []
    try:
        for _ in range(80):  # more idle connections than the server has descriptors left
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            hogs.append(writer)

        def exhausted() -> bool:
            return "out of file descriptors (limit 48)" in server.logs()

        await eventually(exhausted, "the server to run out of descriptors", within=30)
        first = time.monotonic()
        await asyncio.sleep(3)  # long enough for a flood of thousands of lines to show
        elapsed = time.monotonic() - first
        lines = [x for x in server.logs().splitlines() if "out of file descriptors" in x]
        assert 1 <= len(lines) <= elapsed + 2
        assert "out of system resource" not in server.logs()  # asyncio's own line is dropped

        for writer in hogs:
            writer.close()
        hogs.clear()

        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:

            async def served() -> bool:
                try:
                    answer = await http.post(CALLBACK_PATH, content=dumps(seedance("later")))
                except httpx.HTTPError:
                    return False
                return answer.status_code == 200

            await eventually(served, "a callback accepted once descriptors are free", within=30)
    finally:
        for writer in hogs:
            writer.close()
        server.stop()
