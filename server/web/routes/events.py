"""``GET /events``: the outbox as a feed, read with a cursor, long-polled.

Events come in commit order, oldest first, each ``{id, type, timestamp,
data}`` exactly as committed (the stored JSON is spliced in, never rebuilt),
and ``next_cursor`` is always set: pass it back to read on. With ``wait`` an
empty answer is held until an event commits (the store's work signal, no
polling of the table) or the time is up.
"""

from __future__ import annotations

import asyncio
import json
import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.core.decide import EVENT_TYPES
from server.errors import BadRequest
from server.store import Event
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.runtime import runtime

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The longest an empty answer is held (seconds).
MAX_WAIT = 60.0


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(
            f"limit {raw[:20]!r} must be a whole number from 1 to {MAX_LIMIT}",
            code="invalid_filter",
        )
    return int(raw)


def _wait(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw) if raw.isascii() else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT:  # also refuses NaN
        raise BadRequest(
            f"wait {raw[:20]!r} must be a number of seconds from 0 to {MAX_WAIT:g}",
            code="invalid_filter",
        )
    return seconds


def _types(raw: str | None) -> set[str] | None:
    if raw is None or raw == "":
        return None
    asked = {t.strip() for t in raw.split(",") if t.strip()}
    unknown = sorted(asked - set(EVENT_TYPES))
    if unknown or not asked:
        raise BadRequest(
            f"types {', '.join(unknown)[:200]!r} are not event types;"
            f" expected some of {', '.join(EVENT_TYPES)}",
            code="invalid_filter",
        )
    return asked


def _item(event: Event) -> str:
    """The event as the feed shows it: its id, then the committed body's fields, verbatim."""
    body = event.body.strip()
    return '{"id":' + json.dumps(event.id) + ("," + body[1:] if body != "{}" else "}")


@doc(
    "Events in commit order, oldest first (long-poll with wait)",
    query=("after", "types", "limit", "wait"),
    responses={
        200: "{items: [{id, type, timestamp, data}], next_cursor}",
        400: "bad cursor, type, limit or wait",
    },
    auth=True,
)
async def list_events(request: Request) -> Response:
    require_api_token(request)
    q = request.query_params
    cursor = q.get("after") or None
    types, limit, wait = _types(q.get("types")), _limit(q.get("limit")), _wait(q.get("wait"))
    store = runtime(request).store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        mark = store.work_mark("events")  # before reading: a commit meanwhile wakes us
        events, next_cursor = await store.events_after(cursor, types, limit)
        remaining = deadline - loop.time()
        if events or remaining <= 0:
            break
        await store.wait_for_work("events", remaining, after=mark)
        cursor = next_cursor
    text = (
        '{"items":['
        + ",".join(_item(e) for e in events)
        + '],"next_cursor":'
        + json.dumps(next_cursor)
        + "}"
    )
    return Response(text, media_type="application/json")


ROUTES = [Route("/events", list_events, methods=["GET"], name="list_events")]
