"""The HTTP routes, one module per concern; ``ROUTES`` is the whole table."""

from __future__ import annotations

from starlette.routing import Route

from server.web.routes import (
    callbacks,
    dashboard,
    dashboard_endpoints,
    dashboard_quarantine,
    endpoints,
    events,
    files,
    health,
    metrics,
    quarantine,
    submit,
    tasks,
)

ROUTES: list[Route] = [
    *callbacks.ROUTES,
    *tasks.ROUTES,
    *submit.ROUTES,
    *quarantine.ROUTES,
    *endpoints.ROUTES,
    *events.ROUTES,
    *health.ROUTES,
    *files.ROUTES,
    *metrics.ROUTES,
    *dashboard_endpoints.ROUTES,
    *dashboard_quarantine.ROUTES,
    *dashboard.ROUTES,
]
