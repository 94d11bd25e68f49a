"""Where the time goes: a table from py-spy's raw (collapsed) output of the ingest path.

Not a test. Reads one or more files written by ``py-spy record -f raw`` and
prints, for each frame of the callback path below, the share of samples whose
stack contains it (inclusive time), one column per file. See
docs/profile-ingest.md for the commands that make the files.

    python scripts/profile_table.py before.raw after.raw
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

#: (label, the frame's function name as py-spy prints it, up to the " (file:line)").
ROWS = [
    ("event loop thread, all", "BaseEventLoop.run_forever"),
    ("  socket read + HTTP request parsing (uvicorn, h11)", "_SelectorSocketTransport._read_ready"),
    ("  ASGI app: middleware, routing, the route", "ProxyHeadersMiddleware.__call__"),
    ("    callback handler (receive_callback)", "receive_callback"),
    ("      parse the body (json + provider reader)", "parse_body"),
    ("      hand the job to the writer, await the commit", "Store.ingest"),
    ("      headers kept with a delivery (safe_headers)", "safe_headers"),
    ("    the response (JSONResponse + h11 write)", "Response.__call__"),
    ("  logging (access line + callback line)", "Logger.info"),
    ("writer thread, all", "Writer._main"),
    ("  one callback's writes (statements, merge, JSON)", "ingest"),
    ("    its events (archives read, render, JSON, insert)", "add_events"),
    ("    JSON encoding (json.dumps, then orjson)", "dumps"),
    ("  COMMIT and the rest of the group", "Writer._commit_group"),
]

_FRAME = re.compile(r" \(.*$")


def shares(path: Path) -> tuple[int, collections.Counter[str]]:
    """(samples, samples per function name counted once per stack)."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for name in {_FRAME.sub("", frame) for frame in stack.split(";")}:
            inclusive[name] += n
    return total, inclusive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", nargs="+", type=Path, help="py-spy record -f raw output files")
    args = p.parse_args(argv)
    loaded = [shares(path) for path in args.raw]
    print("| where | " + " | ".join(path.stem for path in args.raw) + " |")
    print("|---|" + "---|" * len(args.raw))
    for label, name in ROWS:
        cells = [f"{100 * counts[name] / total:.1f}%" if total else "-" for total, counts in loaded]
        indent = "&nbsp;" * (len(label) - len(label.lstrip()))
        print(f"| {indent}{label.strip()} | " + " | ".join(cells) + " |")
    print("| samples | " + " | ".join(str(total) for total, _ in loaded) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
