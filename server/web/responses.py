"""Responses that can carry any text a delivery brought in.

A kept body may hold a lone surrogate escape (``"\\udc80"``): it is valid JSON
syntax, Python decodes it to a string no UTF-8 encoder accepts, and the plain
Starlette responses fail on it with a 500. These responses write such a code
unit back as its escape ``\\udc80`` (in JSON that is the very escape the sender
wrote; on an HTML page it reads the same), so every route and page shows any
character it was given. NaN and Infinity cannot be in an answer: the door
refuses them (``server.web.routes.body``), and ``allow_nan=False`` keeps it so.
"""

from __future__ import annotations

import json
from typing import Any

from starlette import responses


def encode_text(text: str) -> bytes:
    """UTF-8, with each lone surrogate written as its ``\\uXXXX`` escape."""
    return text.encode("utf-8", "backslashreplace")


def dump_json(content: Any, *, indent: int | None = None) -> str:
    """JSON text of ``content``; non-ASCII kept as is, NaN and Infinity refused."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=indent, separators=separators
    )


class JSONResponse(responses.JSONResponse):
    """Starlette's JSONResponse, but any string can be in ``content``."""

    def render(self, content: Any) -> bytes:
        return encode_text(dump_json(content))


class HTMLResponse(responses.HTMLResponse):
    """An HTML page whose text may hold lone surrogates (shown as ``\\udc80``)."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, str):
            return encode_text(content)
        return bytes(super().render(content))
