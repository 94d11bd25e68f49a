"""JSON text the writer makes: orjson where it can, the standard library where it cannot.

Guarantees:

- ``dumps(value)`` is compact JSON text (no spaces, non-ASCII kept as is) that
  ``json.loads`` reads back to a value equal to ``value``. A value orjson
  refuses (an integer beyond 64 bits, a non-string key, a type it does not
  know) is encoded by ``json.dumps`` with the same options instead, so
  ``dumps`` encodes everything ``json.dumps`` did. Floats may be spelled
  differently (``1e16`` rather than ``1e+16``); NaN and infinities, which
  JSON has no words for, come out as ``null``.

Why: the writer encodes the task state and one event body per change
(about 2 KB each) on every callback; orjson does that 5-6x faster, and the
writer thread shares the interpreter lock with the event loop. Reading is
left to ``json.loads``: orjson reads integers beyond 64 bits as floats, and
telling such text apart costs more than orjson saves on a 1.6 KB body.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (see the module's guarantees)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
