"""Ingest benchmark: taskhook's durable callback path against bare-ack baselines.

Not a test. One run starts three servers under the same uvicorn settings, pinned
to one CPU:

* ``bare`` - a minimal Starlette app whose POST handler reads the body,
  parses it as JSON and answers 200 without storing anything, uvicorn's
  access log off and no logging configured (the ceiling issue 18 measures
  against);
* ``logged`` - the same app with taskhook's logging and uvicorn's access
  line for every request (what per-request logging costs);
* ``taskhook`` - ``python -m server serve`` on a fresh temporary database
  (RECONCILER=off, ARCHIVE=off, SQLITE_SYNCHRONOUS as asked);

and drives them all, from another CPU, with the same load: ~1.5 KB SeeDance
callback bodies, a distinct task id per request, at each connection count,
alternating the baselines and taskhook. It prints requests/s and p50/p99
latency for each and taskhook's ratios to each baseline, then stops taskhook
and checks that every callback it acknowledged with 200 is in the database.
It also reads each server's CPU time (user + system, every thread, from
``/proc``) around each run and prints it per answered request: when other
work shares the machine, CPU per request is much steadier than requests/s,
and ``bare CPU ÷ CPU`` is the throughput ratio a CPU-bound server reaches
when it has its core to itself.
``--before CHECKOUT`` adds a fourth server, taskhook from another checkout,
so a change is measured against its parent in the same run.

The load generator is ``wrk`` (with a Lua script that varies the task id) when
installed, else an asyncio httpx driver; the output says which. Traffic goes
only to 127.0.0.1, and every run is bounded in time.

    python scripts/bench_ingest.py --seconds 5 --connections 16,64 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.tokens import callback_token  # noqa: E402

CALLBACK_SECRET = "bench-callback-secret"
PROVIDER = "seedance"
#: The prompt pads the body to about 1.5 KB, the size of a real SeeDance callback with a prompt.
PROMPT = (
    "A slow dolly shot through a rain-soaked neon market at night, steam rising from food "
    "stalls, reflections shimmering in puddles, a cat weaving between umbrellas, shallow depth "
    "of field, cinematic colour grade, 24 fps, soft film grain, gentle camera sway. "
) * 5
ID_MARK = "BENCHID"


def body_template() -> str:
    """A SeeDance callback with ``BENCHID`` where the task id goes (twice)."""
    body = {
        "success": True,
        "task_id": ID_MARK,
        "trace_id": "6f4a3c1e-2b7d-4e8a-9c1f-0d2e3f4a5b6c",
        "data": {
            "task_id": "cgt-20251221230356-sxgt7",
            "status": "succeeded",
            "video_url": f"https://platform.cdn.acedata.cloud/seedance/{ID_MARK}.mp4",
            "last_frame_url": None,
            "model": "doubao-seedance-1-0-pro-250528",
            "prompt": PROMPT,
            "resolution": "1080p",
            "duration": 5,
        },
    }
    return json.dumps(body, separators=(",", ":"))


# -- the baseline server ------------------------------------------------------


def serve_baseline(port: int, logged: bool) -> None:
    """The bare-ack app under the same uvicorn settings as ``server.cli.serve``.

    ``logged``: taskhook's log set-up and uvicorn's access line per request;
    otherwise the access log is off and nothing else logs per request.
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from server.observe import logs

    async def ack(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        return JSONResponse({"ok": True, "task_id": payload.get("task_id"), "status": "succeeded"})

    app = Starlette(routes=[Route("/callbacks/{provider}/{token}", ack, methods=["POST"])])
    if logged:
        logs.configure("text")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=logged,
        timeout_graceful_shutdown=20,
    )


# -- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} after {timeout}s")


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    path: str
    db: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def start_baseline(cpu: int | None, log_file, logged: bool) -> Target:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)]
    if logged:
        argv.append("--baseline-logged")
    proc = subprocess.Popen(pinned(cpu, argv), cwd=ROOT, stdout=log_file, stderr=log_file)
    wait_listening(port, proc)
    return Target("logged" if logged else "bare", port, proc, f"/callbacks/{PROVIDER}/bench")


def start_taskhook(
    cpu: int | None, workdir: Path, synchronous: str, log_file, checkout: Path = ROOT
) -> Target:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        HOST="127.0.0.1",
        PORT=str(port),
        API_TOKEN="bench-api-token",
        CALLBACK_SECRETS=CALLBACK_SECRET,
        RECONCILER="off",
        ARCHIVE="off",
        SQLITE_SYNCHRONOUS=synchronous,
    )
    argv = [sys.executable, "-m", "server", "serve"]
    proc = subprocess.Popen(
        pinned(cpu, argv), cwd=checkout, env=env, stdout=log_file, stderr=log_file
    )
    wait_listening(port, proc)
    path = f"/callbacks/{PROVIDER}/{callback_token(CALLBACK_SECRET, PROVIDER)}"
    return Target("taskhook", port, proc, path, workdir / "bench.db")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- load generators ----------------------------------------------------------


@dataclass
class Result:
    requests: int  # answered
    ok: int  # answered 200
    errors: int  # non-200 answers and socket errors
    rps: float
    p50_ms: float
    p99_ms: float
    #: Server CPU time (user + system, all threads) per answered request, in µs.
    cpu_us: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRK_SCRIPT = """
-- Each request carries a distinct task id: <run prefix>-<thread>-<counter>.
local template = [[%TEMPLATE%]]
local prefix = "run"
local counter = 0
local threads = {}
local thread_number = 0

function setup(thread)
  thread_number = thread_number + 1
  thread:set("thread_number", thread_number)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] or "run"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  ok_count = 0
end

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%09d", prefix, thread_number, counter)
  local body = template:gsub("BENCHID", id)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 200 then ok_count = ok_count + 1 end
end

function done(summary, latency, requests)
  local ok = 0
  for _, thread in ipairs(threads) do ok = ok + (thread:get("ok_count") or 0) end
  io.write(string.format(
    "WRKRESULT requests=%d ok=%d errors=%d duration_us=%d p50_us=%d p99_us=%d\\n",
    summary.requests, ok,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(workdir: Path) -> Path:
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT.replace("%TEMPLATE%", body_template()))
    return script


def run_wrk(
    target: Target, connections: int, seconds: float, cpu: int | None, script: Path, prefix: str
) -> Result:
    argv = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "30s",
        "-s",
        str(script),
        target.url,
        "--",
        prefix,
    ]
    out = subprocess.run(
        pinned(cpu, argv), capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKRESULT"))
    fields = dict(part.split("=") for part in line.split()[1:])
    duration = int(fields["duration_us"]) / 1e6
    return Result(
        requests=int(fields["requests"]),
        ok=int(fields["ok"]),
        errors=int(fields["errors"]),
        rps=int(fields["requests"]) / duration,
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
    )


async def _httpx_load(url: str, connections: int, seconds: float, prefix: str) -> dict:
    import httpx

    template = body_template()
    latencies: list[float] = []
    ok = errors = 0
    counter = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal ok, errors, counter
            while time.monotonic() < stop_at:
                counter += 1
                body = template.replace(ID_MARK, f"{prefix}-{counter:09d}").encode()
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code == 200:
                    ok += 1
                else:
                    errors += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - began
    return {"latencies": latencies, "ok": ok, "errors": errors, "elapsed": elapsed}


def run_httpx(
    target: Target, connections: int, seconds: float, cpu: int | None, prefix: str
) -> Result:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--httpx-load",
        json.dumps([target.url, connections, seconds, prefix]),
    ]
    out = subprocess.run(
        pinned(cpu, argv), capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    latencies = sorted(data["latencies"])
    cut = max(0, int(len(latencies) * 0.99) - 1)
    return Result(
        requests=len(latencies),
        ok=data["ok"],
        errors=data["errors"],
        rps=len(latencies) / data["elapsed"],
        p50_ms=statistics.median(latencies) * 1000 if latencies else 0.0,
        p99_ms=latencies[cut] * 1000 if latencies else 0.0,
    )


# -- the run ------------------------------------------------------------------


def count_rows(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        conn.close()
    return tasks, deliveries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    p.add_argument("--connections", default="16,64", help="comma-separated connection counts")
    p.add_argument("--rounds", type=int, default=2, help="alternations of all servers")
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    p.add_argument("--driver", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run taskhook from this other checkout (e.g. a worktree of main) in the same run",
    )
    p.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    p.add_argument("--baseline-logged", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--httpx-load", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.baseline_logged)
        return 0
    if args.httpx_load:
        url, connections, seconds, prefix = json.loads(args.httpx_load)
        data = asyncio.run(_httpx_load(url, connections, seconds, prefix))
        print(json.dumps(data))
        return 0

    driver = args.driver
    if driver == "auto":
        driver = "wrk" if shutil.which("wrk") else "httpx"
    counts = [int(c) for c in args.connections.split(",")]
    print(
        f"load generator: {driver}; body {len(body_template())} bytes; "
        f"server CPU {args.server_cpu}, load CPU {args.load_cpu}; "
        f"SQLITE_SYNCHRONOUS={args.synchronous}; {args.seconds}s per run, {args.rounds} rounds"
    )

    with tempfile.TemporaryDirectory(prefix="taskhook-bench-") as tmp:
        workdir = Path(tmp)
        log_file = open(workdir / "servers.log", "ab")  # noqa: SIM115 - closed below
        script = write_wrk_script(workdir) if driver == "wrk" else None
        bare = start_baseline(args.server_cpu, log_file, logged=False)
        logged = start_baseline(args.server_cpu, log_file, logged=True)
        taskhook = start_taskhook(args.server_cpu, workdir, args.synchronous, log_file)
        targets = [bare, logged, taskhook]
        if args.before:
            before_dir = workdir / "before"
            before_dir.mkdir()
            before = start_taskhook(
                args.server_cpu, before_dir, args.synchronous, log_file, Path(args.before)
            )
            before.name = "before"
            targets.append(before)
        stores = [t for t in targets if t.db is not None]
        acked = {t.name: 0 for t in stores}
        results: dict[tuple[str, int], list[Result]] = {}
        run_number = 0

        def load(target: Target, connections: int, seconds: float) -> Result:
            nonlocal run_number
            run_number += 1
            prefix = f"r{run_number}"
            used = cpu_seconds(target.proc.pid)
            if driver == "wrk":
                assert script is not None
                result = run_wrk(target, connections, seconds, args.load_cpu, script, prefix)
            else:
                result = run_httpx(target, connections, seconds, args.load_cpu, prefix)
            used = cpu_seconds(target.proc.pid) - used
            result.cpu_us = used / max(1, result.requests) * 1e6
            return result

        try:
            for target in targets:  # warm up all (imports, caches, the db file)
                result = load(target, counts[0], 1.0)
                if target.db is not None:
                    acked[target.name] += result.ok
            for connections in counts:
                for _ in range(args.rounds):
                    for target in targets:
                        result = load(target, connections, args.seconds)
                        results.setdefault((target.name, connections), []).append(result)
                        if target.db is not None:
                            acked[target.name] += result.ok
                        print(
                            f"  {target.name:<8} c={connections:<3} {result.rps:8.0f} req/s"
                            f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
                            f"  ok {result.ok} errors {result.errors}"
                            f"  server CPU {result.cpu_us:5.0f} µs/request",
                            flush=True,
                        )
        finally:
            for target in targets:
                stop(target.proc)
            log_file.close()

        def med(rs: list[Result], attr: str) -> float:
            return statistics.median(getattr(r, attr) for r in rs)

        print("\nsummary (median of rounds; ratios are taskhook / baseline, same run):")
        print(
            f"{'conns':>5} {'server':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'÷bare':>6} {'p99÷bare':>8} {'÷logged':>7} {'p99÷logged':>10}"
            f" {'CPU µs/req':>10} {'bare CPU÷CPU':>12}"
        )
        for connections in counts:
            b = results[("bare", connections)]
            lg = results[("logged", connections)]
            for target in targets:
                mine = results[(target.name, connections)]
                rps, p99 = med(mine, "rps"), med(mine, "p99_ms")
                line = (
                    f"{connections:>5} {target.name:<8} {rps:>7.0f} {med(mine, 'p50_ms'):>7.2f}"
                    f" {p99:>7.2f}"
                )
                if target is not bare:
                    line += f" {rps / med(b, 'rps'):>6.2f} {p99 / med(b, 'p99_ms'):>8.2f}"
                else:
                    line += " " * 16
                if target.db is not None:
                    line += f" {rps / med(lg, 'rps'):>7.2f} {p99 / med(lg, 'p99_ms'):>10.2f}"
                else:
                    line += " " * 19
                cpu = med(mine, "cpu_us")
                line += f" {cpu:>10.0f} {med(b, 'cpu_us') / cpu if cpu else 0:>12.2f}"
                line += f"   req/s by round: {', '.join(f'{r.rps:.0f}' for r in mine)}"
                print(line)

        verdict = "ok"
        for target in stores:
            assert target.db is not None
            tasks, deliveries = count_rows(target.db)
            fine = tasks >= acked[target.name] and deliveries >= acked[target.name]
            verdict = verdict if fine else "LOST CALLBACKS"
            print(
                f"\ndurability ({target.name}): {acked[target.name]} callbacks acknowledged with"
                f" 200; the database holds {tasks} tasks and {deliveries} deliveries:"
                f" {'ok' if fine else 'LOST CALLBACKS'}"
            )
        return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
