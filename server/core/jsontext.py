"""JSON text for the hot path: orjson where it can, the standard library where it cannot.

Guarantees:

- ``dumps(value)`` is compact JSON text (no spaces, non-ASCII kept as is) that
  ``json.loads`` reads back to a value equal to ``value``. A value orjson
  refuses (an integer beyond 64 bits, a non-string key, a type it does not
  know) is encoded by ``json.dumps`` with the same options instead, so
  ``dumps`` encodes everything ``json.dumps`` did. Floats may be spelled
  differently (``1e16`` rather than ``1e+16``); NaN and infinities, which
  JSON has no words for, come out as ``null``.
- ``loads(text)`` gives what ``json.loads(text)`` gives, and raises what it
  raises: any text orjson refuses (lone surrogates, NaN, deep nesting, plain
  errors) is read again by ``json.loads``, whose result or error stands. Text
  with a run of 19 or more digits anywhere goes straight to ``json.loads``:
  orjson reads integers beyond 64 bits as floats, and such a run is the only
  way to spell one (a run inside a string only costs the faster path).

Why: the writer encodes the task state and one event body per change
(about 2 KB each) on every callback; orjson does that ~6x faster, and the
writer thread shares the interpreter lock with the event loop.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: Integers orjson would read as floats have at least this many digits (2**63 has 19).
_LONG_NUMBER = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (see the module's guarantees)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes, **options: Any) -> Any:
    """``json.loads(text, **options)``, taking orjson's faster path when it agrees.

    ``options`` (``parse_constant`` and the like) only matter on the standard
    path, which is the only one that can meet a constant.
    """
    long_number = (
        _LONG_NUMBER.search(text) if isinstance(text, str) else _LONG_NUMBER_BYTES.search(text)
    )
    if long_number is not None:
        return json.loads(text, **options)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text, **options)
