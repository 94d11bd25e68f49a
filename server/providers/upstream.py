"""Clients for the providers' tasks endpoints, used by the reconciler.

Every failure leaves this module as one of the ``UpstreamError`` classes below,
translated at the boundary (timeouts, transport errors, HTTP statuses, bodies
that are not what the endpoint promises). Messages name the provider, the
endpoint path and the status; they never contain the token.

"Not yet" is not an error: a task missing from ``items``, an ``{}`` answer, a
Seedance 2.0 404 or empty ``data`` all come back as ``None``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from server import __version__
from server.core.ids import task_key
from server.core.types import ACEDATA_PROVIDERS
from server.errors import UpstreamError, worst
from server.settings import Settings

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
    """A 2xx whose body is not JSON or not the expected shape; ``body`` keeps its start."""

    def __init__(self, provider: str, detail: str, *, body: bytes, **kw: Any) -> None:
        super().__init__(provider, detail, **kw)
        self.body = body[:BAD_BODY_LIMIT]


class Rejected(UpstreamError):
    """Any other 4xx (``bad_request``, ``token_mismatched``, ...) or an unexpected 3xx."""


class NotImplementedAction(Rejected):
    """400 ``api_not_implemented``: the endpoint does not offer the action we asked for."""


@dataclass(frozen=True)
class Answer:
    """One task's answer from a tasks endpoint."""

    task_id: str  # the id we asked for, spelled as we asked it
    body: bytes  # the raw JSON of this task's answer, kept as a delivery
    payload: Any  # ``body`` decoded


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
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


class _Client:
    """What both clients share: one request, translated into our errors."""

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


async def _gather_bounded(
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


def _distinct_by_key(ids: Sequence[str]) -> dict[str, str]:
    """Task key -> the first spelling asked, in the order asked."""
    firsts: dict[str, str] = {}
    for task_id in ids:
        firsts.setdefault(task_key(task_id), task_id)
    return firsts


def _per_asked(ids: Sequence[str], by_key: Mapping[str, Fetched]) -> dict[str, Any]:
    """One entry per distinct id asked; an answer is relabelled with that spelling."""
    out: dict[str, Any] = {}
    for task_id in dict.fromkeys(ids):
        result = by_key.get(task_key(task_id))
        if isinstance(result, Answer) and result.task_id != task_id:
            result = Answer(task_id=task_id, body=result.body, payload=result.payload)
        out[task_id] = result
    return out


def _item_keys(item: dict[str, Any]) -> list[str]:
    """Keys an item may be matched by: the wrapper's id, then the ids inside its response."""
    response = item.get("response")
    inner = response if isinstance(response, dict) else item
    data = inner.get("data")
    candidates = [
        item.get("id"),
        item.get("task_id"),
        inner.get("task_id"),
        data.get("task_id") if isinstance(data, dict) else None,  # Dreamina: may lack dashes
    ]
    return [task_key(c) for c in candidates if isinstance(c, str) and c.strip()]


def _compact(item: Any) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


class AceDataClient(_Client):
    """``POST {base}/{provider}/tasks`` for SeeDream, SeeDance and Dreamina."""

    def __init__(self, provider: str, base_url: str, token: str, http: httpx.AsyncClient) -> None:
        super().__init__(provider, token, http)
        self.url = f"{base_url.rstrip('/')}/{provider}/tasks"
        self._path = httpx.URL(self.url).path
        #: False once upstream said ``api_not_implemented`` to retrieve_batch.
        self.batch_supported = True

    async def retrieve_batch(self, ids: Sequence[str]) -> dict[str, Answer | None]:
        """One entry per distinct id asked: its Answer, or None when upstream has none yet."""
        firsts = _distinct_by_key(ids)
        if not firsts:
            return {}
        by_key: dict[str, Answer] | None = None
        if self.batch_supported:
            try:
                by_key = await self._batch(firsts)
            except NotImplementedAction:
                # Remembered: asking again each pass would only cost a call and a log line.
                logger.info("%s: retrieve_batch is not implemented; using retrieve", self.provider)
                self.batch_supported = False
        if by_key is None:
            by_key = await self._singles(firsts)
        return _per_asked(ids, by_key)

    async def retrieve(self, task_id: str) -> Answer | None:
        """``retrieve`` one task; ``{}`` (no such task or no result yet) is None."""
        what = f"POST {self._path} (retrieve)"
        response = await self._send("POST", self.url, what, {"action": "retrieve", "id": task_id})
        self._raise_for_status(response, what)
        payload = self._payload(response, what)
        if not isinstance(payload, dict):
            raise self._bad_shape(response, what, "a JSON object")
        if not payload:
            return None
        return Answer(task_id=task_id, body=response.content, payload=payload)

    async def _batch(self, firsts: dict[str, str]) -> dict[str, Answer]:
        what = f"POST {self._path} (retrieve_batch)"
        body = {"action": "retrieve_batch", "ids": list(firsts.values())}
        response = await self._send("POST", self.url, what, body)
        self._raise_for_status(response, what)
        payload = self._payload(response, what)
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise self._bad_shape(response, what, 'an object with an "items" list')
        found: dict[str, Answer] = {}
        for item in items:
            if not isinstance(item, dict) or not item:
                continue  # "not yet" placeholders and junk say nothing about any task
            key = next((k for k in _item_keys(item) if k in firsts), None)
            if key is None or key in found:
                logger.debug("%s: ignoring an unmatched or repeated batch item", self.provider)
                continue
            found[key] = Answer(task_id=firsts[key], body=_compact(item), payload=item)
        return found

    async def _singles(self, firsts: dict[str, str]) -> dict[str, Answer]:
        """The batch done with single calls; the first error raised is the batch's error."""
        results = await _gather_bounded(firsts, self.retrieve, FALLBACK_CONCURRENCY)
        errors = [r for r in results.values() if isinstance(r, UpstreamError)]
        if errors:
            raise worst(errors)
        return {key: a for key, a in results.items() if isinstance(a, Answer)}


class Seedance2Client(_Client):
    """``GET {base}/v1/video/generations/{task_id}``; no batch, so many single calls."""

    def __init__(
        self, base_url: str, api_key: str, http: httpx.AsyncClient, concurrency: int = 4
    ) -> None:
        super().__init__("seedance2", api_key, http)
        self.base_url = base_url.rstrip("/")
        self.concurrency = max(1, concurrency)

    async def retrieve(self, task_id: str) -> Answer | None:
        """The task's answer; None on 404 or an empty ``data`` (not known yet)."""
        url = f"{self.base_url}/v1/video/generations/{quote(task_id, safe='')}"
        what = f"GET {httpx.URL(url).path}"
        response = await self._send("GET", url, what)
        if response.status_code == 404:
            return None
        self._raise_for_status(response, what)
        payload = self._payload(response, what)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict | None):
            raise self._bad_shape(response, what, 'an object whose "data" is an object')
        if not payload.get("data"):
            return None
        return Answer(task_id=task_id, body=response.content, payload=payload)

    async def retrieve_many(self, ids: Sequence[str]) -> dict[str, Fetched]:
        """One entry per distinct id asked, errors included instead of raised.

        At most ``concurrency`` calls run at once; ids that share a task key
        are asked once. The caller inspects the errors: an UpstreamUnauthorized or
        RateLimited means the provider should be paused (ids not yet sent when
        it came carry that same error and were not sent).
        """
        by_key = await _gather_bounded(_distinct_by_key(ids), self.retrieve, self.concurrency)
        return _per_asked(ids, by_key)


def build_clients(
    settings: Settings, http: httpx.AsyncClient
) -> dict[str, AceDataClient | Seedance2Client]:
    """A client per provider whose token is configured; the others are left out."""
    clients: dict[str, AceDataClient | Seedance2Client] = {}
    base, token = settings.acedata_base_url, settings.acedata_api_token
    if token:
        clients.update({p: AceDataClient(p, base, token, http) for p in ACEDATA_PROVIDERS})
    if settings.seedance2_api_key:
        clients["seedance2"] = Seedance2Client(
            settings.seedance2_base_url, settings.seedance2_api_key, http
        )
    return clients


def default_http_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared client for upstream calls: bounded waits and connections, no redirects."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"user-agent": f"taskhook/{__version__}"},
        follow_redirects=False,
    )
