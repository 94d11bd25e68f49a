"""``python -m server reconcile``: one manual pass (or a loop) against the configured database.

Without ``--loop`` it checks every unfinished task now, whatever its schedule
(or only the named providers / task ids), prints progress to stderr and a
summary table to stdout. ``--dry-run`` asks upstream but writes nothing: it
shows what the answers would change. Exit codes: 0 ran, 1 an upstream call
failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import TextIO

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from server.providers import NAMES, Client, build_clients, token_settings
from server.providers.upstream import default_http_client
from server.reconcile.health import HealthBoard
from server.reconcile.loop import ReconcilerLoop
from server.reconcile.reconciler import run_pass
from server.reconcile.report import PassReport
from server.settings import Settings
from server.store import Store, open_store

log = logging.getLogger("taskhook.reconciler")

#: A manual pass has no per-pass bound worth having: it is asked for every task.
MANUAL_LIMIT = 10_000_000


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "reconcile", help="ask upstream about unfinished tasks now (one pass, or --loop)"
    )
    p.add_argument(
        "--provider",
        action="append",
        choices=NAMES,
        help="only this provider (repeatable)",
    )
    p.add_argument(
        "--task-id", action="append", dest="task_ids", metavar="ID", help="only this task"
    )
    p.add_argument("--dry-run", action="store_true", help="ask upstream, show changes, write none")
    p.add_argument(
        "--loop",
        action="store_true",
        help="keep running scheduled passes every RECONCILE_INTERVAL (the Procfile worker)",
    )


def _usage_error(settings: Settings, wanted: list[str] | None, configured: set[str]) -> str | None:
    if wanted:
        missing = [p for p in wanted if p not in configured]
        if missing:
            names = sorted(token_settings(missing))
            return (
                f"no token for {', '.join(missing)}: set {' and '.join(names)} "
                "(the reconciler cannot ask upstream without it)"
            )
    elif not configured:
        return f"no provider token is set: set {' and/or '.join(token_settings())}"
    return None


def print_summary(report: PassReport, out: TextIO) -> None:
    head = ("provider", "checked", "completed", "failed", "expired", "waiting", "calls", "errors")
    rows = [head]
    for rep in report.providers.values():
        errors = ", ".join(f"{k}={v}" for k, v in sorted(rep.errors.items())) or "-"
        if rep.skipped:
            errors = f"skipped: {rep.skipped}"
        rows.append(
            (
                rep.provider,
                f"{rep.checked}/{rep.due}",
                str(rep.completed),
                str(rep.failed),
                str(rep.expired),
                str(rep.waiting),
                str(rep.calls),
                errors,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    title = "dry run: nothing written" if report.dry_run else "reconcile pass"
    print(f"{title} ({report.duration:.2f}s)", file=out)
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)
    changes = [c for rep in report.providers.values() for c in rep.changes]
    if report.dry_run and changes:
        print("would change:", file=out)
        for c in changes:
            print(f"  {c.provider:<10} {c.task_id}: {c.before} -> {c.after}", file=out)


def _progress(provider: str, checked: int, total: int) -> None:
    print(f"{provider}: checked {checked} of {total}", file=sys.stderr, flush=True)


async def reconcile(settings: Settings, args: argparse.Namespace) -> int:
    async with default_http_client() as http:
        clients = build_clients(settings, http)
        if args.loop and not clients and not args.provider:
            # A platform restarts a worker that exits; one that waits says why, once.
            return await _idle(settings)
        if error := _usage_error(settings, args.provider, set(clients)):
            print(f"reconcile: {error}", file=sys.stderr)
            return EXIT_USAGE
        async with open_store(settings) as store:
            if args.loop:
                return await _loop(store, settings, clients)
            task_ids, unknown = await _known(store, args.task_ids)
            for task_id in unknown:
                print(f"reconcile: unknown task id {task_id!r}: no task has it", file=sys.stderr)
            if args.task_ids and not task_ids:
                return EXIT_FAILED
            report = await run_pass(
                store,
                clients,
                settings,
                providers=args.provider,
                task_ids=task_ids,
                ignore_schedule=True,
                dry_run=args.dry_run,
                health=HealthBoard(),
                limit=MANUAL_LIMIT,
                progress=_progress,
            )
    print_summary(report, sys.stdout)
    return EXIT_FAILED if report.upstream_failed or unknown else EXIT_OK


async def _known(store: Store, task_ids: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """The ids a store holds (None: every task) and those it does not."""
    if not task_ids:
        return None, []
    known: list[str] = []
    unknown: list[str] = []
    for task_id in task_ids:
        (known if await store.get_task(task_id) is not None else unknown).append(task_id)
    return known, unknown


def _on_stop_signal(callback: Callable[[], object]) -> None:
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            running.add_signal_handler(sig, callback)


async def _idle(settings: Settings) -> int:
    """``--loop`` without any provider token: keep running, say why once, exit 0 on a signal."""
    stop = asyncio.Event()
    _on_stop_signal(stop.set)
    log.warning(
        "reconciler loop idle: no provider token is set; set %s and restart this process",
        " and/or ".join(token_settings()),
    )
    await stop.wait()
    return EXIT_OK


async def _loop(store: Store, settings: Settings, clients: dict[str, Client]) -> int:
    loop = ReconcilerLoop(store, settings, clients)
    _on_stop_signal(lambda: asyncio.ensure_future(loop.stop()))
    print(
        f"reconciler loop every {settings.reconcile_interval:g}s as {loop.holder}",
        file=sys.stderr,
        flush=True,
    )
    await loop.run_forever()
    return EXIT_OK
