"""Webhook delivery benchmark: events delivered per second, and commit-to-delivery latency.

Not a test. Everything runs on 127.0.0.1 and is bounded in time:

* a fast receiving app (uvicorn, its own process) that verifies every request
  with ``standardwebhooks.Webhook.verify``, answers 204 and records, per event,
  the time from the event's ``timestamp`` (taken by taskhook as the change is
  written) to the request's arrival;
* taskhook, ``python -m server serve`` on a fresh SQLite file.

1. **Throughput.** taskhook runs with ``DELIVERY=off`` while the endpoint is
   added and ``--callbacks`` callbacks are posted (each a new task that
   succeeds: two events); then it restarts with ``DELIVERY=on`` and the time
   until the receiver holds every event gives events/s: fan-out, claims,
   signing, HTTP and settling, with nothing else going on.
2. **Latency.** With ``DELIVERY=on``, callbacks come at a steady ``--rate``
   per second for ``--seconds``; p50/p99/max of commit-to-arrival over every
   event, while ingest and delivery share the process.

    python scripts/bench_delivery.py --callbacks 2000 --rate 50 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_load import free_port, pinned, stop  # noqa: E402
from server.core.tokens import callback_token  # noqa: E402

API_TOKEN = "bench-api-token"
SECRET = "bench-callback-secret"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


# -- the receiving app (its own process) -------------------------------------------


def serve_receiver(port: int, secret_file: str) -> None:
    import uvicorn
    from standardwebhooks import Webhook
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state: dict = {
        "hook": None,
        "latencies": [],
        "ids": set(),
        "bad": 0,
        "first": None,
        "last": None,
    }

    async def hook(request: Request) -> Response:
        arrived = time.time()
        if state["hook"] is None:
            state["hook"] = Webhook(Path(secret_file).read_text().strip())  # noqa: ASYNC240
        body = await request.body()
        try:
            event = state["hook"].verify(body, dict(request.headers))
        except Exception:
            state["bad"] += 1
            return Response(status_code=400)
        committed = datetime.fromisoformat(event["timestamp"]).timestamp()
        if request.headers["webhook-id"] not in state["ids"]:
            state["ids"].add(request.headers["webhook-id"])
            state["latencies"].append(arrived - committed)
            state["first"] = state["first"] or arrived
            state["last"] = arrived
        return Response(status_code=204)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "count": len(state["ids"]),
                "bad": state["bad"],
                "latencies": state["latencies"],
                "first": state["first"],
                "last": state["last"],
            }
        )

    async def reset(request: Request) -> JSONResponse:
        state.update(latencies=[], ids=set(), bad=0, first=None, last=None)
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- processes ---------------------------------------------------------------------


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start_taskhook(
    workdir: Path, port: int, delivery: str, cpu: int | None, log, extra: dict[str, str]
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        HOST="127.0.0.1",
        PORT=str(port),
        API_TOKEN=API_TOKEN,
        CALLBACK_SECRETS=SECRET,
        RECONCILER="off",
        ARCHIVE="off",
        DELIVERY=delivery,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    argv = [sys.executable, "-m", "server", "serve"]
    proc = subprocess.Popen(pinned(cpu, argv), cwd=workdir, env=env, stdout=log, stderr=log)
    wait_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


# -- load --------------------------------------------------------------------------


def callback_body(task_id: str) -> bytes:
    return json.dumps(
        {
            "success": True,
            "task_id": task_id,
            "trace_id": str(uuid.uuid4()),
            "data": {
                "task_id": "cgt-20251221230356-sxgt7",
                "status": "succeeded",
                "video_url": f"https://cdn.example/seedance/{task_id}.mp4",
                "model": "doubao-seedance-1-0-pro-250528",
            },
        }
    ).encode()


async def post_all(base: str, count: int, concurrency: int = 16) -> None:
    path = f"/callbacks/seedance/{callback_token(SECRET, 'seedance')}"
    ids = iter(str(uuid.uuid4()) for _ in range(count))
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def worker() -> None:
            for task_id in ids:
                answer = await client.post(path, content=callback_body(task_id))
                answer.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post_steadily(base: str, rate: float, seconds: float, in_flight: int = 32) -> int:
    """One callback every 1/rate s, at most ``in_flight`` unanswered at once (a server that
    falls behind gets a lower rate, which the summary then shows)."""
    path = f"/callbacks/seedance/{callback_token(SECRET, 'seedance')}"
    slots = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight)

    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one() -> None:
            try:
                answer = await client.post(path, content=callback_body(str(uuid.uuid4())))
                answer.raise_for_status()
            finally:
                slots.release()

        sent: list[asyncio.Task[None]] = []
        start = time.monotonic()
        while (due := start + len(sent) / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await slots.acquire()
            sent.append(asyncio.create_task(one()))
        await asyncio.gather(*sent)
    return len(sent)


def wait_for(receiver: str, count: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(f"{receiver}/stats", timeout=10).json()
        if stats["count"] >= count:
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"the receiver has {stats['count']} of {count} events")
        time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the run -----------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--callbacks", type=int, default=2000, help="backlog for the throughput run")
    p.add_argument("--rate", type=float, default=50.0, help="callbacks/s in the latency run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a taskhook setting"
    )
    p.add_argument(
        "--serve-receiver", nargs=2, metavar=("PORT", "SECRET_FILE"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.serve_receiver:
        serve_receiver(int(args.serve_receiver[0]), args.serve_receiver[1])
        return 0

    extra = dict(item.split("=", 1) for item in args.set)
    cpus = os.cpu_count() or 1
    server_cpu, receiver_cpu = (0, 1) if cpus >= 2 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    log = open(workdir / "processes.log", "ab")  # noqa: SIM115 - closed at the end
    secret_file = workdir / "secret"
    rport, tport = free_port(), free_port()
    receiver_url, base = f"http://127.0.0.1:{rport}", f"http://127.0.0.1:{tport}"
    receiver = subprocess.Popen(
        pinned(
            receiver_cpu,
            [sys.executable, __file__, "--serve-receiver", str(rport), str(secret_file)],
        ),
        stdout=log,
        stderr=log,
    )
    taskhook: subprocess.Popen | None = None
    try:
        wait_up(f"{receiver_url}/stats", receiver)
        print(
            f"machine: {cpus} CPUs, load average {os.getloadavg()[0]:.1f}; taskhook on CPU"
            f" {server_cpu}, receiver and load on CPU {receiver_cpu};"
            f" settings {extra or 'defaults'}"
        )

        # 1. throughput: a backlog, then delivery alone.
        taskhook = start_taskhook(workdir, tport, "off", server_cpu, log, extra)
        created = httpx.post(
            f"{base}/endpoints", json={"url": f"{receiver_url}/hook"}, headers=BEARER, timeout=10
        ).json()
        secret_file.write_text(created["secret"])
        asyncio.run(post_all(base, args.callbacks))
        events = 2 * args.callbacks
        stop(taskhook)
        taskhook = start_taskhook(workdir, tport, "on", server_cpu, log, extra)
        cpu_before = cpu_seconds(taskhook.pid)
        stats = wait_for(receiver_url, events, timeout=600)
        cpu = cpu_seconds(taskhook.pid) - cpu_before
        took = stats["last"] - stats["first"]
        print(
            f"throughput: {events} events (a backlog of {args.callbacks} tasks) delivered in "
            f"{took:.2f} s from the first arrival to the last: {(events - 1) / took:.0f} events/s;"
            f" taskhook used {cpu:.1f} CPU s ({1000 * cpu / events:.2f} ms per event,"
            f" {events / cpu:.0f} events per CPU second); {stats['bad']} failed verification"
        )

        # 2. latency under a steady callback load.
        httpx.post(f"{receiver_url}/reset", timeout=10)
        sent = asyncio.run(post_steadily(base, args.rate, args.seconds))
        stats = wait_for(receiver_url, 2 * sent, timeout=120)
        ms = [1000 * x for x in stats["latencies"]]
        print(
            f"latency: {sent} callbacks at {args.rate:g}/s for {args.seconds:g} s ->"
            f" {len(ms)} events; commit to arrival p50 {percentile(ms, 0.50):.1f} ms,"
            f" p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms,"
            f" mean {statistics.fmean(ms):.1f} ms"
        )
    finally:
        if taskhook is not None:
            stop(taskhook)
        stop(receiver)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
