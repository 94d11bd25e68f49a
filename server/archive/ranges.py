"""The ``Range`` header of a request for an archived file (RFC 9110, section 14).

``byte_ranges`` turns the header into the byte ranges to send, or says to send
the whole file, or raises one of the two errors below, which the app answers in
the one JSON error shape.
"""

from __future__ import annotations

import re

from server.errors import BadRequest, HTTPError

#: More ranges than this in one request is a broken client or an attack.
MAX_RANGES = 16
_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)


class BadRange(BadRequest, code="bad_range"):
    """The ``Range`` header is not a valid ``bytes=`` range set."""


class RangeNotSatisfiable(HTTPError, status=416, code="range_not_satisfiable"):
    """No requested range overlaps the file; carries ``Content-Range: bytes */size``."""

    def __init__(self, header: str, size: int) -> None:
        super().__init__(
            f"Range {_shown(header)} asks for no byte of this file, which has {size} bytes; "
            f"ask for bytes=0-{max(size - 1, 0)} or less",
            headers={"Content-Range": f"bytes */{size}"},
        )


def byte_ranges(
    header: str | None, size: int, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]] | None:
    """The ``[start, end)`` ranges to send, sorted and merged; None for the whole file.

    A header in a unit other than bytes is ignored (None), as the RFC requires.
    Invalid syntax, a range whose last byte comes before its first, or more than
    ``max_ranges`` ranges raise ``BadRange``; when none of the ranges overlaps the
    file, ``RangeNotSatisfiable``. Ranges reaching past the end are cut at it.
    """
    if header is None:
        return None
    unit, equals, spec = header.partition("=")
    if not equals:
        raise BadRange(f"Range {_shown(header)} is not of the form bytes=first-last")
    if unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise BadRange(f"Range {_shown(header)} names no range")
    if len(parts) > max_ranges:
        raise BadRange(f"Range {_shown(header)} asks for {len(parts)} ranges; at most {max_ranges}")
    wanted: list[tuple[int, int]] = []
    for part in parts:
        found = _SPEC.fullmatch(part)
        if found is None or found.group(1) == found.group(2) == "":
            raise BadRange(f"Range {_shown(header)}: {part!r} is not first-last, first- or -suffix")
        first, last = found.group(1), found.group(2)
        if first == "":  # the last N bytes
            length = int(last)
            if length > 0 and size > 0:
                wanted.append((max(0, size - length), size))
            continue
        start = int(first)
        if last != "" and int(last) < start:
            raise BadRange(f"Range {_shown(header)}: {part!r} ends before it starts")
        if start < size:
            wanted.append((start, size if last == "" else min(int(last) + 1, size)))
    if not wanted:
        raise RangeNotSatisfiable(header, size)
    return _merged(wanted)


def _shown(header: str) -> str:
    """The header as quoted in a message: repr'd, and cut so an answer stays small."""
    return repr(header if len(header) <= 80 else header[:80] + "...")


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ranges become one, in ascending order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
