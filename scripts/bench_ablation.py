"""Where a durable callback's CPU goes: taskhook's work taken away a piece at a time.

Not a test. Unpacks this checkout's ``HEAD`` (``git archive``) into a
temporary folder and adds one hook to the callback route's ``accept``, read
from the environment variable ``ABL``:

* ``answer`` (``ABL=0``): answer 200 as soon as the token is checked and the
  body read (taskhook's HTTP stack: uvicorn, h11, the deadlines protocol, the
  concurrency limit, the fast path, the answer);
* ``+ parse`` (``ABL=1``): and parse the body into an observation first;
* ``+ log`` (``ABL=2``): and count it and log its callback line;
* ``durable`` (no hook taken): the whole path, kept, merged and committed.

It starts those four servers and the bare Starlette baseline of
``bench_ingest.py``, each pinned to one CPU, and drives them from another
with ``wrk`` and ``bench_load``'s callback bodies, one after the other, the
order reversed every other round. It prints each run's CPU per request
(every thread, ``/proc``), then the medians and what each piece adds. CPU per
request moves less than requests/s when the machine is shared; medians of
several rounds move less again. Only 127.0.0.1; every run is bounded.

    python scripts/bench_ablation.py --seconds 3 --rounds 8 --connections 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_ingest import Target, start_baseline, start_taskhook  # noqa: E402
from scripts.bench_load import cpu_seconds, run_wrk, stop, write_wrk_script  # noqa: E402

LEVELS = {"answer": "0", "+ parse": "1", "+ log": "2", "durable": ""}

ROUTE = Path("server/web/routes/callbacks.py")
#: Where the hook goes: just before the body is handed to the one data path.
ANCHOR = """    try:
        outcome = await receive(rt.store, provider, body, headers=headers)
"""
HOOK = """    if _ABLATION:
        from server.providers.parse import parse_body

        level = int(_ABLATION)
        task_id = (parse_body(provider, body).task_id or "x") if level >= 1 else "x"
        outcome = IngestOutcome(task_id, provider, "succeeded", False, True, True)
        if level >= 2:
            CALLBACKS.labels(provider, "accepted").inc()
            log.info(
                "callback provider=%s task_id=%s status=%s duplicate=%s changed=%s client=%s",
                provider, task_id, outcome.status, False, True, client,
            )
        return outcome
"""
HEADER = 'log = logging.getLogger("taskhook.callbacks")\n'


def unpack_with_hook(into: Path) -> Path:
    """``HEAD`` of this checkout in ``into``, its callback route hooked; fails loudly if the
    route no longer has the anchor the hook goes before."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    route = into / ROUTE
    source = route.read_text()
    if ANCHOR not in source or HEADER not in source:
        raise SystemExit(f"bench_ablation: {ROUTE} changed; update ANCHOR and HEADER here")
    source = source.replace(ANCHOR, HOOK + ANCHOR, 1)
    source = source.replace(HEADER, HEADER + '_ABLATION = __import__("os").environ.get("ABL")\n')
    route.write_text(source)
    return into


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("bench_ablation needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="taskhook-ablation-") as tmp:
        workdir = Path(tmp)
        checkout = unpack_with_hook(workdir / "checkout")
        script = write_wrk_script(workdir)
        log_file = open(workdir / "servers.log", "ab")  # noqa: SIM115 - closed below
        targets: list[Target] = []
        try:
            bare = start_baseline(args.server_cpu, log_file, logged=False)
            targets.append(bare)
            for name, level in LEVELS.items():
                os.environ["ABL"] = level
                folder = workdir / f"db-{level or 'durable'}"
                folder.mkdir()
                target = start_taskhook(args.server_cpu, folder, "full", log_file, checkout)
                target.name = name
                targets.append(target)
            os.environ.pop("ABL", None)
            for target in targets:  # warm up
                run_wrk(target, args.connections, 1, args.load_cpu, script, "w")
            for n in range(args.rounds):
                for target in targets if n % 2 == 0 else targets[::-1]:
                    used = cpu_seconds(target.proc.pid)
                    result = run_wrk(
                        target, args.connections, args.seconds, args.load_cpu, script, f"r{n}"
                    )
                    per = (cpu_seconds(target.proc.pid) - used) / max(1, result.requests) * 1e6
                    cpu.setdefault(target.name, []).append(per)
                    print(
                        f"  round {n + 1} {target.name:<8} {result.rps:7.0f} req/s"
                        f" {per:5.0f} µs CPU/request, errors {result.errors}",
                        flush=True,
                    )
        finally:
            for target in targets:
                stop(target.proc)
            log_file.close()
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"\n{args.connections} connections, medians of {args.rounds} rounds:\n")
    print("| server | CPU µs/request | adds | ÷ bare |")
    print("|---|---|---|---|")
    previous: float | None = None  # the level before: what this one adds to it
    for name in ("bare", *LEVELS):
        adds = "" if previous is None else f"{medians[name] - previous:+.0f}"
        print(f"| {name} | {medians[name]:.0f} | {adds} | {medians[name] / medians['bare']:.2f} |")
        previous = None if name == "bare" else medians[name]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
