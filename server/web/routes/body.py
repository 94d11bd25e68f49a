"""Reading request bodies with a size limit enforced while reading."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from server.errors import BadRequest, BodyTooLarge, NotJSONBody


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it exceeds ``limit`` bytes (exactly ``limit`` is fine)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("the client went away before the body was complete") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    body = await read_limited(request, limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise NotJSONBody("the body is not valid JSON") from None
