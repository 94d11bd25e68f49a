"""Run one manual reconcile pass: the same as ``python -m server reconcile``.

Usage: ``python scripts/reconcile.py [--provider P] [--task-id ID ...] [--dry-run] [--loop]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["reconcile", *sys.argv[1:]]))
