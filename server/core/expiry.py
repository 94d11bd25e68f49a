"""When a result URL stops working: pure, no I/O.

Upstream hands out signed URLs that expire (Seedance 2.0 documents 24
hours). The store queues an archive copy with the time its URL expires, so
the archiver copies the soonest-expiring first and knows when a copy can no
longer succeed.
"""

from __future__ import annotations

import calendar
import time
from urllib.parse import parse_qsl, urlsplit

DEFAULT_URL_LIFETIME = 24 * 3600.0  # Seedance 2.0 documents 24 hours
_ABSOLUTE_AFTER = 1_000_000_000  # relative validities are <= 30 days; unix times are 10 digits


def url_expiry(url: str, finished_at: float) -> float:
    """The unix time a signed URL stops working; ``finished_at`` + 24 h when it does not say.

    TOS (``X-Tos-*``) and S3 v4 (``X-Amz-*``) give a validity in seconds
    relative to the signing time ``X-...-Date`` (``yyyyMMddTHHmmssZ``). Without
    that date the validity counts from ``finished_at``, a late bound since the
    URL was signed before we got it. OSS/S3 v2 ``Expires`` is a unix time.
    """
    params = {key.lower(): value for key, value in parse_qsl(urlsplit(url).query)}
    for prefix in ("x-tos-", "x-amz-"):
        seconds = _whole_number(params.get(prefix + "expires"))
        if seconds is None:
            continue
        if seconds >= _ABSOLUTE_AFTER:
            return float(seconds)
        signed_at = _basic_iso_time(params.get(prefix + "date"))
        return (finished_at if signed_at is None else signed_at) + seconds
    absolute = _whole_number(params.get("expires"))
    if absolute is not None and absolute >= _ABSOLUTE_AFTER:
        return float(absolute)
    return finished_at + DEFAULT_URL_LIFETIME


def _whole_number(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() else None


def _basic_iso_time(value: str | None) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(value or "", "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None
