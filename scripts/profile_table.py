"""Where the time goes: a table from py-spy's raw (collapsed) output of the ingest path.

Not a test. Reads one or more files written by ``py-spy record -f raw`` and
prints, for each frame of the callback path below, the share of samples whose
stack contains it (inclusive time), one column per file. See
docs/profile-ingest.md for the commands that make the files.

    python scripts/profile_table.py before.raw after.raw
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
        stacks.append((frozenset(_FRAME.sub("", frame) for frame in stack.split(";")), n))
    return total, stacks


def share(stacks: list[tuple[frozenset[str], int]], names: tuple[str, ...]) -> int:
    """Samples whose stack holds any of ``names`` (each counted once)."""
    return sum(n for frames, n in stacks if not frames.isdisjoint(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", nargs="+", type=Path, help="py-spy record -f raw output files")
    args = p.parse_args(argv)
    loaded = [shares(path) for path in args.raw]
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
