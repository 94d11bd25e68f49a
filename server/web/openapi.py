"""The OpenAPI schema, built from the route table so it cannot drift.

Each endpoint declares its own summary, parameters and answers with ``@doc``;
``build_schema`` walks the app's routes and collects them. A route without
``@doc`` still appears (with a bare summary), and a test checks that every
route is documented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.routing import BaseRoute, Mount, Route

from server import __version__

F = TypeVar("F", bound=Callable[..., Any])

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def doc(
    summary: str,
    *,
    responses: dict[int, str],
    query: Iterable[str] = (),
    body: str | None = None,
    auth: bool = False,
) -> Callable[[F], F]:
    """Attach OpenAPI facts to an endpoint function.

    An endpoint behind the API token (``auth=True``) answers 401 without a good
    bearer; that response is listed for it unless ``responses`` says otherwise.
    """
    if auth:
        responses = dict(sorted({401: "no or wrong bearer", **responses}.items()))

    def attach(endpoint: F) -> F:
        endpoint.__openapi__ = {  # type: ignore[attr-defined]
            "summary": summary,
            "responses": responses,
            "query": tuple(query),
            "body": body,
            "auth": auth,
        }
        return endpoint

    return attach


def _operation(route: Route, method: str) -> dict[str, Any]:
    info = getattr(route.endpoint, "__openapi__", {"summary": route.name, "responses": {200: "OK"}})
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ] + [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in info.get("query", ())
    ]
    responses: dict[str, Any] = {}
    for status, description in info["responses"].items():
        answer: dict[str, Any] = {"description": description}
        if status >= 400:
            answer["content"] = {"application/json": {"schema": ERROR_SCHEMA}}
        responses[str(status)] = answer
    operation: dict[str, Any] = {
        "summary": info["summary"],
        "operationId": f"{method.lower()}_{route.name}",
        "parameters": parameters,
        "responses": responses,
    }
    if info.get("body"):
        operation["requestBody"] = {
            "required": True,
            "description": info["body"],
            "content": {"application/json": {"schema": {}}},
        }
    if info.get("auth"):
        operation["security"] = [{"bearer": []}]
    return operation


def _routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, Route]]:
    for route in routes:
        if isinstance(route, Route):
            yield prefix + route.path, route
        elif isinstance(route, Mount):
            yield from _routes(route.routes or [], prefix + route.path)


def build_schema(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, route in _routes(routes):
        if not route.include_in_schema:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.0.3",
        "info": {"title": "taskhook", "version": __version__},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
