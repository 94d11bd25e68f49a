"""``python -m server archive``: copy every result file still missing, now.

For a database that ran with ARCHIVE=off, or to push through copies waiting
for a retry. Exit codes: 0 it ran and every copy succeeded, 1 a copy failed,
2 a usage or configuration error.
"""

from __future__ import annotations

import sys
from typing import TextIO

from server.archive.archiver import Archiver, CopyOutcome
from server.archive.download import redact_url
from server.archive.storage import StorageError
from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from server.settings import Settings
from server.store import open_store


async def run(settings: Settings, *, retry_failed: bool = False, out: TextIO = sys.stdout) -> int:
    if not settings.archive:
        print(
            "configuration error: ARCHIVE is off, so nothing would keep the copies current; "
            "run with ARCHIVE=on (e.g. 'ARCHIVE=on python -m server archive')",
            file=sys.stderr,
        )
        return EXIT_USAGE

    def report(outcome: CopyOutcome) -> None:
        url = redact_url(outcome.job.url)
        if outcome.ok:
            print(f"archived {url} sha256={outcome.sha256} bytes={outcome.bytes}", file=out)
        else:
            then = "gave up" if outcome.final else "will retry"
            print(f"failed   {url} {outcome.error} ({then}): {outcome.message}", file=out)

    async with open_store(settings) as store:
        archiver = Archiver(settings, store)
        try:
            await archiver.open(cleanup=False)
        except StorageError as exc:
            print(f"configuration error: {exc.message}", file=sys.stderr)
            await archiver.close()
            return EXIT_USAGE
        try:
            summary = await archiver.run_pending(include_failed=retry_failed, report=report)
        finally:
            await archiver.close()
        counts = await store.archive_counts()
    failed = ", ".join(f"{code}={n}" for code, n in sorted(summary.failed.items())) or "none"
    print(
        f"archive: copied {summary.copied} file(s), {summary.bytes} bytes; "
        f"failed {summary.failures} ({failed}); "
        f"now done={counts.get('done', 0)} pending={counts.get('pending', 0)} "
        f"running elsewhere={counts.get('running', 0)} failed={counts.get('failed', 0)}",
        file=out,
    )
    return EXIT_FAILED if summary.failures else EXIT_OK
