"""The load side of the ingest benchmarks: callback bodies, drivers, processes, CPU time.

Not a test. Shared by ``scripts/bench_ingest.py`` and ``scripts/bench_pg.py``:
~1.5 KB SeeDance callback bodies with a distinct task id per request, sent by
``wrk`` (a Lua script varies the id) or, without it, an asyncio httpx driver
(run as ``python scripts/bench_load.py --httpx-load ARGS`` in its own
process); helpers to start, pin and stop servers; a process's CPU time.
Traffic goes only to 127.0.0.1, and every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- load generators ----------------------------------------------------------


class Served(Protocol):
    """A running server under load (``url``: where its callbacks go)."""

    @property
    def url(self) -> str: ...


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
    #: The part of it on the process's main thread (the event loop), in µs.
    loop_cpu_us: float = 0.0


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU time the process (or its main thread) has used so far.

    Linux ``/proc``; 0 elsewhere. The main thread is the one whose id is the
    process's: uvicorn's event loop in the servers measured here.
    """
    stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
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
    target: Served, connections: int, seconds: float, cpu: int | None, script: Path, prefix: str
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
    target: Served, connections: int, seconds: float, cpu: int | None, prefix: str
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


if __name__ == "__main__" and sys.argv[1:2] == ["--httpx-load"]:
    url, connections, seconds, prefix = json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(_httpx_load(url, connections, seconds, prefix))))
