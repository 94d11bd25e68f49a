"""One webhook attempt over HTTP: POST, read at most the first 1 KB back, never follow.

The whole attempt (connect, send, answer, the first KB of the body) is bounded
by one deadline, so a slow endpoint holds a slot for at most
``DELIVERY_TIMEOUT`` seconds. Failures are described for the attempt record
without the URL (it may carry the application's credentials).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from server.core.delivery_schedule import Answer

#: How much of an answer's body an attempt keeps.
RESPONSE_KEEP = 1024


@dataclass(frozen=True)
class Sent:
    """What one attempt got."""

    answer: Answer
    duration_ms: int
    #: The first 1 KB of the answer's body (invalid UTF-8 replaced); None without an answer.
    response: str | None
    #: When the answer (its status line and headers) came back.
    answered_at: float | None


def client(concurrency: int) -> httpx.AsyncClient:
    """The HTTP client of the delivery service: no redirects, no proxies from the
    environment, a connection pool sized for the attempts in flight."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=None,  # the whole attempt has one deadline instead (send)
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        headers={"user-agent": "taskhook-webhooks"},
    )


async def send(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,  # noqa: ASYNC109 - one deadline over connect, send and answer
) -> Sent:
    """POST ``body`` to ``url``; every failure is an ``Answer`` with an error, never raised."""
    started = time.perf_counter()
    status: int | None = None
    kept = bytearray()
    answered_at: float | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            async with http.stream("POST", url, content=body, headers=dict(headers)) as answer:
                status, answered_at = answer.status_code, time.time()
                async for chunk in answer.aiter_bytes():
                    kept += chunk
                    if len(kept) >= RESPONSE_KEEP:
                        break
    except TimeoutError:
        if status is None:
            error = f"timeout: no answer within {timeout:g} s (DELIVERY_TIMEOUT)"
    except httpx.TimeoutException:
        error = f"timeout: {_describe(status, 'the connection timed out')}"
    except httpx.ConnectError as exc:
        error = f"connection failed: {_reason(exc)}"
    except httpx.HTTPError as exc:
        if status is None:
            error = f"{type(exc).__name__}: {_reason(exc)}"
    duration_ms = round((time.perf_counter() - started) * 1000)
    if status is not None and 300 <= status < 400 and error is None:
        error = "redirects are not followed"
    response = (
        bytes(kept[:RESPONSE_KEEP]).decode("utf-8", "replace") if status is not None else None
    )
    return Sent(Answer(status, error), duration_ms, response, answered_at)


def _describe(status: int | None, text: str) -> str:
    return text if status is None else f"{text} after answering {status}"


def _reason(exc: Exception) -> str:
    """The exception's own words (they name no URL), or its class when it has none."""
    text = str(exc).strip()
    return text[:300] if text else type(exc).__name__
