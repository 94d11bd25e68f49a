"""Reading request bodies: a size limit enforced while reading, and JSON checked at the door.

An API body (``POST /tasks``) is refused with 400 before anything is written
when it is not JSON, holds NaN, Infinity or a number that overflows a double,
holds a lone surrogate escape (``"\\ud800"`` names no character, so it cannot
be stored as text), or nests deeper than ``MAX_DEPTH``. What passes can be
stored, read back and rendered on every route and page.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from server.errors import BadRequest, BodyTooLarge, NotJSON, NotJSONBody
from server.providers.parse import decode

#: Objects and arrays inside one another, at most; the task page renders metadata recursively.
MAX_DEPTH = 32


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it exceeds ``limit`` bytes (exactly ``limit`` is fine)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
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


def strict_json(body: bytes) -> Any:
    """The JSON value of an API body, or ``NotJSONBody`` (400) saying what is wrong with it."""
    try:
        value = decode(body)
    except NotJSON as exc:
        raise NotJSONBody(exc.message) from None
    problem = json_problem(value, max_depth=MAX_DEPTH)
    if problem:
        raise NotJSONBody(f"body is not usable JSON: {problem}")
    return value


async def read_json(request: Request, limit: int) -> Any:
    return strict_json(await read_limited(request, limit))


def json_problem(value: Any, *, max_depth: int, surrogates: bool = True) -> str | None:
    """What makes a decoded value unstorable, or None; iterative, so depth costs no stack.

    ``surrogates=False`` lets lone surrogates pass (our responses can show them).
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogates and _lone_surrogate(item):
                return "it holds a lone surrogate escape (such as \\ud800), which is no character"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return f"it nests objects and arrays deeper than {max_depth} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
