"""``GET /metrics``: Prometheus text format, no bearer (scrapers rarely carry one)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.observe.metrics import exposition
from server.web.openapi import doc
from server.web.runtime import runtime


@doc("Prometheus metrics (text exposition format)", responses={200: "metrics"})
async def metrics(request: Request) -> Response:
    body = await exposition(runtime(request).store)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics, methods=["GET"], name="metrics")]
