"""Where the time goes: a table from py-spy's raw (collapsed) output of the ingest path.

Not a test. Reads one or more files written by ``py-spy record -f raw`` and
prints, for each frame of the callback path below, the share of samples whose
stack contains it (inclusive time), one column per file. See
docs/profile-ingest.md for the commands that make the files.

    python scripts/profile_table.py before.raw after.raw

``--loop``: the event-loop thread alone, each of its samples counted once, in
the first row of ``LOOP_ROWS`` whose names its stack holds (else "the rest"),
as shares of that thread's samples: where one callback's time on the loop
goes, next to the bare app's (whose one thread is its loop).

    python scripts/profile_table.py --loop taskhook.raw bare.raw
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

#: (label, the function names as py-spy prints them, up to the " (file:line)"): a sample
#: counts for a row when its stack holds any of the names (the before and after of a change
#: may name the same work differently).
ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("event loop thread, all", ("BaseEventLoop.run_forever",)),
    (
        "  socket read + HTTP request parsing (uvicorn, h11)",
        ("_SelectorSocketTransport._read_ready",),
    ),
    ("  the ASGI app, from uvicorn's proxy headers down", ("ProxyHeadersMiddleware.__call__",)),
    ("    the callback (Starlette route, or the fast path)", ("receive_callback", "accept")),
    ("      parse the body (json + provider reader)", ("parse_body",)),
    ("      hand the job to the writer, await the commit", ("Store.ingest", "Writer.run")),
    (
        "    the answer (Starlette JSONResponse, or the fast path's send)",
        ("Response.__call__", "RequestResponseCycle.send"),
    ),
    ("  logging (access line + callback line, or the callback line)", ("Logger.info",)),
    ("writer thread, all", ("Writer._main",)),
    ("  one callback's writes (statements, merge, JSON)", ("ingest",)),
    ("    its events (archives read, render, JSON, insert)", ("add_events",)),
    ("    JSON encoding", ("dumps",)),
    ("  the group: its jobs, savepoints, COMMIT", ("Writer._commit_group",)),
]

#: ``--loop``: first match wins, so each sample of the loop thread is counted once.
LOOP_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("the response: h11 events and its send() calls", ("RequestResponseCycle.send",)),
    ("the callback line (logging, with its write)", ("Logger.info",)),
    ("the callback: checks, parse, hand-off to the writer", ("accept",)),
    ("the request: h11 parsing, uvicorn's scope, cycle and task", ("H11Protocol.handle_events",)),
    ("recv() of the request", ("_SelectorSocketTransport._read_ready__data_received",)),
    ("epoll", ("EpollSelector.select",)),
]
#: The loop thread: uvicorn runs its event loop on the main thread. py-spy names the
#: thread first in each stack when it records ``--threads`` (a stack it could read only
#: in part still has it); without names, stacks that reach the loop's frame count.
LOOP_THREAD = ("MainThread", "BaseEventLoop.run_forever")

_FRAME = re.compile(r" \(.*$")


def shares(path: Path) -> tuple[int, list[tuple[frozenset[str], int]]]:
    """(samples, each stack as the set of its function names with its sample count)."""
    total = 0
    stacks: list[tuple[frozenset[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        named = frames[0].startswith("thread (")
        thread = {frames[0].rpartition(": ")[2]} if named else set()
        stacks.append((frozenset(_FRAME.sub("", f) for f in frames[named:]) | thread, n))
    return total, stacks


def share(stacks: list[tuple[frozenset[str], int]], names: tuple[str, ...]) -> int:
    """Samples whose stack holds any of ``names`` (each counted once)."""
    return sum(n for frames, n in stacks if not frames.isdisjoint(names))


def loop_rows(stacks: list[tuple[frozenset[str], int]]) -> tuple[int, list[int]]:
    """(the loop thread's samples, its samples in each of ``LOOP_ROWS`` and then the rest)."""
    counts = [0] * (len(LOOP_ROWS) + 1)
    for frames, n in stacks:
        if frames.isdisjoint(LOOP_THREAD):
            continue
        row = next(
            (i for i, (_, names) in enumerate(LOOP_ROWS) if not frames.isdisjoint(names)),
            len(LOOP_ROWS),
        )
        counts[row] += n
    return sum(counts), counts


Loaded = list[tuple[int, list[tuple[frozenset[str], int]]]]


def print_loop(paths: list[Path], loaded: Loaded) -> None:
    split = [loop_rows(stacks) for _, stacks in loaded]
    print("| on the event loop | " + " | ".join(path.stem for path in paths) + " |")
    print("|---|" + "---|" * len(paths))
    labels = [label for label, _ in LOOP_ROWS] + ["the rest: asyncio, tasks, middleware, the app"]
    for i, label in enumerate(labels):
        cells = [f"{100 * counts[i] / loop:.1f}%" if loop else "-" for loop, counts in split]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "| the loop thread's share of all samples | "
        + " | ".join(
            f"{100 * loop / total:.1f}%" if total else "-"
            for (loop, _), (total, _) in zip(split, loaded, strict=True)
        )
        + " |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", nargs="+", type=Path, help="py-spy record -f raw output files")
    p.add_argument("--loop", action="store_true", help="the event-loop thread, by LOOP_ROWS")
    args = p.parse_args(argv)
    loaded = [shares(path) for path in args.raw]
    if args.loop:
        print_loop(args.raw, loaded)
        return 0
    print("| where | " + " | ".join(path.stem for path in args.raw) + " |")
    print("|---|" + "---|" * len(args.raw))
    for label, names in ROWS:
        cells = [
            f"{100 * share(stacks, names) / total:.1f}%" if total else "-"
            for total, stacks in loaded
        ]
        indent = "&nbsp;" * (len(label) - len(label.lstrip()))
        print(f"| {indent}{label.strip()} | " + " | ".join(cells) + " |")
    print("| samples | " + " | ".join(str(total) for total, _ in loaded) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
