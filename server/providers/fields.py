"""Lenient readers for provider payloads, shared by every provider module.

Pure. A field of an unexpected type reads as absent, never as an error: a
provider that sends a number where we expected a string has told us nothing,
and nothing it sends may take the server down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from server.core.ids import task_key
from server.core.types import Status

#: Longer "ids" are junk, not ids (AceData's are 36 characters, Seedance 2.0's about 41).
MAX_TASK_ID_LENGTH = 256

#: Every status word the providers are known to use, normalised by ``normalise_word``.
STATUS_WORDS: Mapping[str, Status] = {
    **dict.fromkeys(
        ("not_start", "pending", "queued", "queuing", "submitted", "waiting", "created"),
        Status.QUEUED,
    ),
    **dict.fromkeys(
        ("running", "processing", "in_progress", "generating", "started"), Status.RUNNING
    ),
    **dict.fromkeys(
        (
            "succeeded",
            "succeed",
            "success",
            "successful",
            "done",
            "completed",
            "complete",
            "finished",
        ),
        Status.SUCCEEDED,
    ),
    # Upstream's own "expired" (it gave up on the task) is a failure it reports,
    # unlike our Status.EXPIRED, which only means we stopped waiting.
    **dict.fromkeys(
        ("failed", "failure", "fail", "error", "expired", "cancelled", "canceled", "rejected"),
        Status.FAILED,
    ),
}


def text(value: Any) -> str | None:
    """A non-blank string we can store, else None (odd types count as absent)."""
    if not isinstance(value, str) or not value.strip():
        return None
    if value.isascii():  # no surrogates to look for (and a flag CPython keeps: no scan)
        return value
    try:
        value.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
    except UnicodeEncodeError:
        return None
    return value


def task_id(value: Any) -> str | None:
    """A string that can be a task id: non-blank, storable, not absurdly long, and not
    made of dashes only (ids match without dashes, so those would have no key)."""
    found = text(value)
    if found is None or len(found) > MAX_TASK_ID_LENGTH or not task_key(found):
        return None
    return found


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def is_scalar(value: Any) -> bool:
    """A JSON scalar worth keeping: a storable string, a finite number, a boolean."""
    if isinstance(value, str):
        return text(value) is not None
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)  # bool included


def scalars(
    source: Mapping[str, Any],
    *,
    only: tuple[str, ...] | None = None,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The JSON-scalar fields of ``source`` (nested values and nulls are left out)."""
    keys = only if only is not None else [k for k in source if isinstance(k, str)]
    return {k: source[k] for k in keys if k not in skip and k in source and is_scalar(source[k])}


def normalise_word(raw: str) -> str:
    """A status word as the tables spell it: lower case, ``_`` for ``-`` and spaces."""
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def status_word(raw: str | None, words: Mapping[str, Status] = STATUS_WORDS) -> Status | None:
    """The status ``raw`` stands for, or None when it is absent or not a word we know."""
    if raw is None:
        return None
    return words.get(normalise_word(raw))


def error_info(source: Any) -> tuple[str | None, str | None]:
    """(code, message) of an ``error`` field that is an object or a bare string."""
    if isinstance(source, Mapping):
        return text(source.get("code")), text(source.get("message"))
    return None, text(source)


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"
