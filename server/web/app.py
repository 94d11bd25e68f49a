"""The ASGI application: routes, error shapes and the lifespan that starts everything."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from server.archive.archiver import Archiver
from server.archive.storage import ArchiveStorage, storage_for
from server.core.tokens import callback_token
from server.delivery.worker import Delivery
from server.errors import HTTP_STATUS_CODES, TaskhookError, error_body
from server.http.limit import ConcurrencyLimit
from server.observe import logs, metrics
from server.observe.heap import settled_heap
from server.providers import PROVIDERS
from server.reconcile.loop import EmbeddedReconciler, ReconcilerOff
from server.retention import EventRetention, RetentionService
from server.secrets import Secrets, load_secrets, mismatch_warning
from server.service import Service
from server.settings import Settings
from server.startup import banner
from server.store import Store, open_store
from server.web.responses import JSONResponse
from server.web.routes import ROUTES
from server.web.routes.callbacks import CallbackFastPath, error_response
from server.web.runtime import Runtime

log = logging.getLogger("taskhook.app")


def secret_values(secrets: Secrets) -> list[str]:
    """Every secret this process holds, for the log redactor: tokens derived from them too."""
    values = [secrets.api_token, *secrets.callback_secrets]
    values += [callback_token(s, p) for s in secrets.callback_secrets for p in PROVIDERS]
    return values


async def taskhook_error(request: Request, exc: Exception) -> JSONResponse:
    """Any error of ours: its class says the status and the code."""
    assert isinstance(exc, TaskhookError)
    return error_response(exc)


async def starlette_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_STATUS_CODES.get(exc.status_code, "http_error")
    # The path is never echoed: a near-miss callback path carries a real token.
    if exc.status_code == 404:
        message = f"no route serves {request.method} on this path; see /openapi.json"
    elif exc.status_code == 405:
        allowed = exc.headers.get("Allow", "") if exc.headers else ""
        message = f"{request.method} is not allowed on this path" + (
            f"; it allows {allowed}" if allowed else ""
        )
    else:
        message = logs.redact(str(exc.detail))
    return JSONResponse(error_body(code, message), exc.status_code, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, logs.redact_path(request.url.path))
    return JSONResponse(
        error_body("internal_error", "taskhook failed to handle this request; see its logs"), 500
    )


def background_services(
    settings: Settings, store: Store, archive_storage: ArchiveStorage | None = None
) -> list[Service]:
    """Every background service of the web process, in start order (stopped in reverse)."""
    embedded = settings.reconciler == "embedded"
    services: list[Service] = [EmbeddedReconciler(store, settings) if embedded else ReconcilerOff()]
    if settings.archive:
        services.append(Archiver(settings, store, storage=archive_storage))
    services.append(EventRetention(store, settings.event_retention))
    if settings.delivery:
        services.append(Delivery(settings, store))
    services.append(RetentionService(store, settings))
    return services


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; nothing is opened until the lifespan starts."""
    settings = settings or Settings.from_env()
    # Before uvicorn's first line (Procfile runs uvicorn --factory): every line in our format.
    logs.configure(settings.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logs.configure(settings.log_format)
        store = open_store(settings, on_commit=metrics.observe_commit)
        await store.open()
        try:
            secrets = await load_secrets(store, settings)
            logs.hide(secret_values(secrets))
            if secrets.generated:
                logs.print_banner(banner(settings, secrets), settings.log_format)
            if warning := await mismatch_warning(store, settings):
                log.warning("%s", warning)
            app.state.taskhook = rt = Runtime(settings, store, secrets)
            rt.archive_storage = archive = storage_for(settings)  # /files serves from it
            try:
                for service in background_services(settings, store, archive):
                    await rt.services.start(service)
                log.info("taskhook ready database=%s", settings.database_label)
                with settled_heap():
                    yield
            finally:
                await rt.services.stop()
                await archive.close()
        finally:
            await store.close()

    return App(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            TaskhookError: taskhook_error,
            HTTPException: starlette_error,
            Exception: unexpected_error,
        },
        limit=settings.limit_concurrency,
    )


class App(Starlette):
    """Starlette behind two plain ASGI layers: the concurrency limit, then the callback route.

    ``LIMIT_CONCURRENCY`` counts every request, callbacks included; a callback
    is then served by ``CallbackFastPath`` without Starlette's routing and
    request machinery (see ``server.web.routes.callbacks``).
    """

    def __init__(self, *, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._entry = ConcurrencyLimit(CallbackFastPath(super().__call__), limit=limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._entry(scope, receive, send)
