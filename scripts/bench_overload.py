"""Measure taskhook under hostile clients on loopback; prints figures (not a test).

1. Slowloris: N connections send a request line, then a header line every half
   second, while real callbacks are timed (median and worst latency) and the
   time until the server cuts the slow clients off is measured.
2. File-descriptor exhaustion: the server runs with RLIMIT_NOFILE lowered;
   idle connections exhaust it for a few seconds; the log lines and bytes it
   wrote meanwhile are counted, then the time to serve again once they close.

    python scripts/bench_overload.py [--slow 300] [--header-timeout 10] [--seconds 5]

``--pythonpath DIR`` runs another checkout's server (to compare with older code).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.tokens import callback_token  # noqa: E402

SECRET = "bench-secret"
PATH = f"/callbacks/seedance/{callback_token(SECRET, 'seedance')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path, pythonpath: str, env: dict[str, str], nofile: int | None) -> tuple:
    port = free_port()
    log_path = folder / f"server-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder}/t-{port}.db",
        "PORT": str(port),
        "API_TOKEN": "bench",
        "CALLBACK_SECRETS": SECRET,
        "RECONCILER": "off",
        "ARCHIVE": "off",
        "PYTHONPATH": pythonpath,
        **env,
    }

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve"],
            cwd=folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, port, url, log_path
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log_path.read_text()}")


def body(i: int) -> bytes:
    return b'{"success": true, "task_id": "bench-%d", "data": {"status": "running"}}' % i


async def slowloris(args: argparse.Namespace, folder: Path) -> None:
    proc, port, url, _ = start(
        folder, args.pythonpath, {"HEADER_TIMEOUT": str(args.header_timeout)}, None
    )
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(args.slow):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
            readers.append(reader)
            writers.append(writer)
        opened = time.monotonic()

        async def dribble() -> None:
            n = 0
            while any(not w.is_closing() for w in writers):
                await asyncio.sleep(0.5)
                n += 1
                for w in writers:
                    if not w.is_closing():
                        w.write(f"X-Slow-{n}: 1\r\n".encode())

        dribbler = asyncio.create_task(dribble())
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for i in range(50):
                started = time.perf_counter()
                answer = await http.post(PATH, content=body(i))
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text

        async def closed(reader: asyncio.StreamReader) -> float:
            await reader.read()
            return time.monotonic() - opened

        try:
            cut = await asyncio.wait_for(
                asyncio.gather(*(closed(r) for r in readers)), args.header_timeout * 3 + 30
            )
            cut_text = f"all {len(cut)} cut off after {min(cut):.1f}-{max(cut):.1f} s"
        except TimeoutError:
            cut_text = f"still open after {args.header_timeout * 3 + 30:.0f} s (never cut off)"
        dribbler.cancel()
        print(
            f"slowloris: {args.slow} slow clients; 50 callbacks meanwhile: median "
            f"{statistics.median(latencies) * 1000:.1f} ms, worst {max(latencies) * 1000:.1f} ms; "
            f"slow clients {cut_text} (HEADER_TIMEOUT={args.header_timeout:g})"
        )
    finally:
        for w in writers:
            w.close()
        proc.terminate()
        proc.wait(30)


async def exhaustion(args: argparse.Namespace, folder: Path) -> None:
    proc, port, url, log_path = start(
        folder, args.pythonpath, {"HEADER_TIMEOUT": "600"}, args.nofile
    )
    writers = []
    try:
        before = log_path.stat().st_size
        for _ in range(args.nofile * 2):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        await asyncio.sleep(args.seconds)
        text = log_path.read_bytes()[before:].decode(errors="replace")
        lines = text.count("\n")
        size = len(text.encode())
        for w in writers:
            w.close()
        closed = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            while True:
                try:
                    if (await http.post(PATH, content=body(0))).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        recovered = time.monotonic() - closed
        print(
            f"fd exhaustion: RLIMIT_NOFILE={args.nofile}, {len(writers)} idle connections for "
            f"{args.seconds:g} s: {lines} log lines ({size / 1024:.1f} KiB, "
            f"{lines / args.seconds:.1f} lines/s); a callback served {recovered:.2f} s after "
            "they closed"
        )
    finally:
        for w in writers:
            w.close()
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--nofile", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pythonpath", default=str(ROOT))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(slowloris(args, Path(tmp)))
        asyncio.run(exhaustion(args, Path(tmp)))


if __name__ == "__main__":
    main()
