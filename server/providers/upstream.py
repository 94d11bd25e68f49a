"""The HTTP side every provider client shares: one request, our errors, bounded fan-out.

Every failure leaves a client as one of the ``UpstreamError`` kinds below,
translated at the boundary (timeouts, transport errors, HTTP statuses, bodies
that are not what the endpoint promises). Messages name the provider, the
endpoint path and the status; they never contain the token.

"Not yet" is not an error: the provider modules (``acedata``, ``seedance2``)
return ``None`` for a task upstream has no answer for yet.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from server import __version__
from server.core.ids import task_key
from server.core.jsontext import dumps
from server.errors import UpstreamError
from server.providers.base import Answer

logger = logging.getLogger(__name__)

#: How much of an unexpected body a BadAnswer keeps for the logs.
BAD_BODY_LIMIT = 64 * 1024
#: Single ``retrieve`` calls in flight when AceData has no ``retrieve_batch``.
FALLBACK_CONCURRENCY = 4


class UpstreamUnauthorized(UpstreamError):
    """401 or ``invalid_token``: the token is wrong or missing; pause the provider."""

    kind, priority = "unauthorized", 2


class RateLimited(UpstreamError):
    """429: ``retry_after`` is how many seconds upstream asked us to wait, if it said."""

    kind, priority = "rate_limited", 1

    def __init__(self, provider: str, detail: str, *, retry_after: float | None, **kw: Any) -> None:
        super().__init__(provider, detail, **kw)
        self.retry_after = retry_after


class ServerError(UpstreamError):
    """5xx: upstream failed; back off and try later."""

    kind = "server_error"


class UpstreamTimeout(UpstreamError):
    """Connecting, sending or reading took longer than the client's timeout."""

    kind = "timeout"


class ConnectionFailed(UpstreamError):
    """The request did not get through (DNS, refused connection, reset, ...)."""


class BadAnswer(UpstreamError):
    """A 2xx whose body is not JSON or not the expected shape; ``content`` keeps its start."""

    def __init__(self, provider: str, detail: str, *, body: bytes, **kw: Any) -> None:
        super().__init__(provider, detail, **kw)
        self.content = body[:BAD_BODY_LIMIT]


class Rejected(UpstreamError):
    """Any other 4xx (``bad_request``, ``token_mismatched``, ...) or an unexpected 3xx."""


class NotImplementedAction(Rejected):
    """400 ``api_not_implemented``: the endpoint does not offer the action we asked for."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)  # callers cap it
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_fields(content: bytes) -> tuple[str | None, str]:
    """``(code, message)`` from an error body, whichever of the known shapes it has."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    error = body.get("error")
    source = error if isinstance(error, dict) else body
    code, message = source.get("code"), source.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message[:200] if isinstance(message, str) else "",
    )


class HTTPClient:
    """What every provider client shares: one request, translated into our errors."""

    def __init__(self, provider: str, token: str, http: httpx.AsyncClient) -> None:
        self.provider = provider
        self._token = token
        self._http = http

    def _safe(self, text: str) -> str:
        """``text`` with the token masked, for anything upstream or httpx wrote."""
        return text.replace(self._token, "***") if self._token else text

    async def _send(self, method: str, url: str, what: str, body: Any = None) -> httpx.Response:
        """Send one request; any failure to get a response becomes an UpstreamError."""
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        try:
            return await self._http.request(method, url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                self.provider, f"{what} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            detail = self._safe(f"{what} failed: {type(exc).__name__}: {exc}")
            raise ConnectionFailed(self.provider, detail) from exc
        except httpx.DecodingError as exc:
            detail = f"{what} answered a body that could not be decoded"
            raise BadAnswer(self.provider, detail, body=b"") from exc

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        code, message = _error_fields(response.content)
        detail = self._safe(
            f"{what} answered {status}"
            + (f" {code}" if code else "")
            + (f": {message}" if message else "")
        )
        kw: dict[str, Any] = {"status_code": status, "code": code}
        if status == 401 or code == "invalid_token":
            raise UpstreamUnauthorized(self.provider, detail, **kw)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RateLimited(self.provider, detail, retry_after=retry_after, **kw)
        if status >= 500:
            raise ServerError(self.provider, detail, **kw)
        if code == "api_not_implemented":
            raise NotImplementedAction(self.provider, detail, **kw)
        raise Rejected(self.provider, detail, **kw)

    def _payload(self, response: httpx.Response, what: str) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, absurdly nested
            detail = f"{what} answered {response.status_code} with a body that is not JSON"
            raise BadAnswer(self.provider, detail, body=response.content) from exc

    def _bad_shape(self, response: httpx.Response, what: str, expected: str) -> BadAnswer:
        detail = f"{what} answered {response.status_code} but the body is not {expected}"
        return BadAnswer(self.provider, detail, body=response.content)


#: What one id got: its answer, None for "not yet", or the error of its call.
Fetched = Answer | None | UpstreamError


async def gather_bounded(
    firsts: dict[str, str], fetch: Callable[[str], Awaitable[Answer | None]], limit: int
) -> dict[str, Fetched]:
    """``fetch`` each id of ``firsts`` with at most ``limit`` in flight; errors returned per key.

    After an UpstreamUnauthorized or RateLimited, ids not yet started are not sent: they
    get that same error, since every further call would meet it too.
    """
    semaphore = asyncio.Semaphore(limit)
    stop: list[UpstreamError] = []

    async def one(task_id: str) -> Fetched:
        async with semaphore:
            if stop:
                return stop[0]
            try:
                return await fetch(task_id)
            except (UpstreamUnauthorized, RateLimited) as exc:
                stop.append(exc)
                return exc
            except UpstreamError as exc:
                return exc

    results = await asyncio.gather(*(one(task_id) for task_id in firsts.values()))
    return dict(zip(firsts, results, strict=True))


def distinct_by_key(ids: Sequence[str]) -> dict[str, str]:
    """Task key -> the first spelling asked, in the order asked."""
    firsts: dict[str, str] = {}
    for task_id in ids:
        firsts.setdefault(task_key(task_id), task_id)
    return firsts


def per_asked(ids: Sequence[str], by_key: Mapping[str, Fetched]) -> dict[str, Any]:
    """One entry per distinct id asked; an answer is relabelled with that spelling."""
    out: dict[str, Any] = {}
    for task_id in dict.fromkeys(ids):
        result = by_key.get(task_key(task_id))
        if isinstance(result, Answer) and result.task_id != task_id:
            result = Answer(task_id=task_id, body=result.body, payload=result.payload)
        out[task_id] = result
    return out


def compact(item: Any) -> bytes:
    """One item of a batch answer as its own delivery body: compact JSON (NaN as null).

    The bytes ``jsontext.dumps`` would give, made by orjson directly (no text
    decoded and encoded again) unless orjson refuses the value.
    """
    try:
        return orjson.dumps(item)
    except TypeError:  # an integer beyond 64 bits, say: the standard library's way
        return dumps(item).encode()


def default_http_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared client for upstream calls: bounded waits and connections, no redirects."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"user-agent": f"taskhook/{__version__}"},
        follow_redirects=False,
    )
