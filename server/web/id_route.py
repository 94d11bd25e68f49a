"""Routes whose last parameter is an id that may hold any character, ``/`` included.

Servers decode ``%2F`` before routing, and Starlette's ``{x:path}`` stops at a
newline, so an id like ``a/b`` or ``0\\n0`` cannot be routed by the usual path
templates. An ``IdRoute`` reads the raw path instead: it splits it on its
literal slashes and decodes each piece, so ``/tasks/a%2Fb`` names ``a/b``. An
unencoded ``/tasks/a/b`` names ``a/b`` too; with a ``suffix`` (``deliveries``),
a last segment equal to it names the sub-resource of the id before it (an id
ending in ``/deliveries`` is written with ``%2F``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from starlette.routing import Match, Route
from starlette.types import Scope


class IdRoute(Route):
    """``{prefix}/{param}`` or ``{prefix}/{param}/{suffix}``, the id taken from the raw path."""

    def __init__(
        self,
        prefix: str,
        endpoint: Callable[..., Any],
        *,
        param: str,
        suffix: str | None = None,
        siblings: tuple[str, ...] = (),
        methods: list[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> None:
        path = f"{prefix}/{{{param}}}" + (f"/{suffix}" if suffix else "")
        super().__init__(
            path,
            endpoint,
            methods=methods or ["GET"],
            name=name,
            include_in_schema=include_in_schema,
        )
        self.prefix_parts = prefix.strip("/").split("/")
        self.param = param
        self.suffix = suffix
        #: Suffixes another IdRoute on this prefix serves (this route leaves them alone).
        self.siblings = siblings

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        segments = raw_path(scope).split("/")[1:]
        width = len(self.prefix_parts)
        pieces = segments[width:]
        if segments[:width] != self.prefix_parts or not pieces or pieces == [""]:
            return Match.NONE, {}
        last = pieces[-1] if len(pieces) > 1 else None
        if self.suffix is not None:
            if last != self.suffix:
                return Match.NONE, {}
            pieces = pieces[:-1]
        elif last is not None and last in self.siblings:
            return Match.NONE, {}
        value = "/".join(unquote(piece, errors="replace") for piece in pieces)
        child = {"endpoint": self.endpoint, "path_params": {self.param: value}}
        if self.methods and scope["method"] not in self.methods:
            return Match.PARTIAL, child
        return Match.FULL, child


def raw_path(scope: Scope) -> str:
    """The request path as sent (percent escapes intact), without any root path."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1").partition("?")[0] if raw else quote(scope["path"], safe="/")
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
