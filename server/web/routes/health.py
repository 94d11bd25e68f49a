"""Liveness, readiness and the OpenAPI schema."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from server.observe.logs import redact
from server.web.openapi import build_schema, doc
from server.web.responses import JSONResponse, dump_json
from server.web.runtime import Runtime, runtime

#: A database that cannot commit a tiny write in this long is not ready.
WRITE_CHECK_TIMEOUT = 5.0


@doc("Liveness: 200 while the process serves", responses={200: "alive"})
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def failure(exc: BaseException) -> str:
    """An exception as a reason anyone may read: its type and message, secrets redacted."""
    return redact(f"{type(exc).__name__}: {exc}")[:500]


async def database_check(rt: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(rt.store.check_writable(), WRITE_CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "not writable"; say which
        return {
            "ok": False,
            "reason": f"the database did not take a write: {failure(exc)}",
        }
    return {"ok": True, "write_ms": round((time.perf_counter() - started) * 1000, 2)}


async def service_statuses(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Every service's status as an answer can carry it; an odd one is itself not ready.

    ``Services`` already turns a ``status()`` that raises into ``ok: false``;
    here a status that cannot be written as JSON (NaN, an object) or that is
    not ok without saying why gets a reason too, and every reason is redacted.
    """
    checked = {}
    for name, status in (await rt.services.statuses()).items():
        try:
            dump_json(status)
        except (TypeError, ValueError) as exc:
            status = {"ok": False, "reason": f"its status cannot be shown: {failure(exc)}"}
        if not status.get("ok", True):
            reason = status.get("reason") or "not ok (no reason given)"
            status = {**status, "reason": redact(str(reason))[:500]}
        checked[name] = status
    return checked


@doc(
    "Readiness: database writable and background services healthy",
    responses={200: "ready", 503: "not ready; the body says why"},
)
async def readyz(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks = {"database": await database_check(rt)}
    checks.update(await service_statuses(rt))
    ok = all(check.get("ok", True) for check in checks.values())
    reasons = [f"{name}: {c['reason']}" for name, c in checks.items() if not c.get("ok", True)]
    return JSONResponse(
        {"ok": ok, "reasons": reasons, "checks": checks}, status_code=200 if ok else 503
    )


@doc("The OpenAPI schema of every route", responses={200: "OpenAPI 3 document"})
async def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(build_schema(request.app.routes))


ROUTES = [
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/readyz", readyz, methods=["GET"], name="readyz"),
    Route("/openapi.json", openapi_schema, methods=["GET"], name="openapi"),
]
