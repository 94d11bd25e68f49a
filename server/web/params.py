"""Query and path parameters, read strictly: anything a route does not expect is a 400.

``str.isdigit`` accepts ``"²"`` and ``int`` then fails, and SQLite refuses
integers past 64 bits; every number here is plain ASCII digits within the
bounds the route states, so a bad parameter is the client's 400 (or an id's
404), never a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from server.errors import BadRequest

#: The largest row id SQLite (and a signed 64-bit column) can hold.
MAX_ROW_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


def whole_number(raw: str | None, name: str, *, default: int, low: int, high: int) -> int:
    """``raw`` as an int from ``low`` to ``high`` (``default`` when absent), else 400."""
    if raw is None or raw == "":
        return default
    if _DIGITS.fullmatch(raw) and low <= int(raw) <= high:
        return int(raw)
    raise BadRequest(
        f"{name} {_shown(raw)} must be a whole number from {low} to {high}",
        code="invalid_filter",
    )


def row_id(raw: str | None) -> int | None:
    """A positive row id, or None for anything no row can have (the caller answers 404)."""
    if raw is None or not _DIGITS.fullmatch(raw):
        return None
    number = int(raw)
    return number if 1 <= number <= MAX_ROW_ID else None


def row_cursor(raw: str | None, name: str = "cursor") -> int | None:
    """A cursor that is a row id this API handed out (None when absent), else 400."""
    if raw is None or raw == "":
        return None
    number = row_id(raw)
    if number is None:
        raise BadRequest(
            f"{name} {_shown(raw)} is not one this API gave out", code="invalid_cursor"
        )
    return number


def one_of(raw: str | None, name: str, allowed: Iterable[str]) -> str | None:
    """``raw`` when it is one of ``allowed``; None when absent or empty; else 400."""
    if raw is None or raw == "":
        return None
    choices = tuple(allowed)
    if raw in choices:
        return raw
    raise BadRequest(
        f"{name} {_shown(raw)} is not one of {', '.join(choices)}", code="invalid_filter"
    )


def hours(raw: str | None, name: str = "hours", *, default: float, high: float) -> float:
    """A finite, non-negative number of hours up to ``high`` (plain decimal notation)."""
    if raw is None or raw == "":
        return default
    if _DECIMAL.fullmatch(raw):
        value = float(raw)
        if math.isfinite(value) and 0 <= value <= high:
            return value
    raise BadRequest(
        f"{name} {_shown(raw)} must be a number of hours from 0 to {high:g}, such as 1 or 0.5",
        code="invalid_filter",
    )


def _shown(raw: str) -> str:
    """The bad value as the message shows it: quoted, and cut short when long."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
