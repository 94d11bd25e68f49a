"""How JSON is written on PostgreSQL.

JSON documents are stored as ``text`` written by ``dumps``: ASCII only
(``ensure_ascii``), so any character a payload carried (NUL, lone
surrogates, any language) travels as a JSON escape that PostgreSQL's
``text`` accepts and ``json.loads`` gives back unchanged. The rows read back
as records through ``server.store.rows``, the same for every backend.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def dumps(value: Any) -> str:
    """Compact, ASCII-only JSON text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
