"""One creation call upstream, made once, and what its answer means.

``send(call, within)`` POSTs a provider's creation call (``Creation``, built
by the provider module) and returns the task upstream created (``Created``),
or raises one of the errors below. Guarantees:

- **Never sent twice.** One request, on a connection of its own, no retry of
  any kind (each creation is billed; AceData's ``acedatacloud`` SDK retries
  POSTs on timeouts and 5xx without an idempotency key, so it is not used).
- **Sent or not is told apart.** A failure before the request started
  (refused connection, DNS, connect timeout) created nothing: 502. Anything
  after (a timeout, a cut connection, an answer that names no task) may have
  created a task: ``OutcomeUnknown`` (504), never retried.
- **Bounded.** The whole call, from connecting to the last byte of the
  answer, takes at most ``within`` seconds (``SUBMIT_TIMEOUT``).
- Messages name the provider and the path, never the token.

The answer's task id is its ``task_id``, else its ``id``; its ``trace_id`` is
read when present (docs/submit-upstream.md).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from server import __version__
from server.errors import UpstreamError

#: Seconds a creation call may take to connect (part of its whole ``within``).
CONNECT_TIMEOUT = 10.0
#: ``Retry-After`` given with a 429 when upstream gave none.
DEFAULT_RETRY_AFTER = 30
#: The longest upstream message passed on.
MESSAGE_LIMIT = 500


@dataclass(frozen=True)
class Creation:
    """One creation call as the provider documents it: where, with which token, what body."""

    provider: str
    url: str
    token: str = field(repr=False)
    #: The setting that holds ``token``, for messages that send the user to it.
    token_setting: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Created:
    """The task upstream created: its id, its trace id if given, and the raw answer."""

    task_id: str
    trace_id: str | None
    body: bytes
    status_code: int


class CreationError(UpstreamError):
    """A creation call that gave no task; ``http_status`` and ``code`` are what we answer."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        upstream_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(provider, message, status_code=status_code, code=upstream_code)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class CreationRejected(CreationError, status=400, code="bad_request"):
    """Upstream refused the request itself (400/422): its code and message, as 400."""

    kind = "rejected"


class CreationRateLimited(CreationError, status=429, code="rate_limited"):
    """Upstream said 429: answered 429 with ``Retry-After`` (upstream's, or the default)."""

    kind = "rate_limited"


class CreationFailed(CreationError, status=502, code="upstream_error"):
    """Nothing was created and the request was not at fault (401/403, 5xx, unreachable): 502."""

    kind = "failed"


class OutcomeUnknown(CreationError, status=504, code="submit_outcome_unknown"):
    """The request went out but no usable answer came back: a task may exist upstream (504).

    Its message says what happened to the call; the caller says what it means.
    """

    kind = "unknown"

    def __init__(self, provider: str, message: str, *, trace_id: str | None = None) -> None:
        super().__init__(provider, message)
        self.trace_id = trace_id


@dataclass
class _Progress:
    """How far the request got, from httpcore's trace events."""

    traced: bool = False  # the transport reports its steps (a real connection)
    sent: bool = False  # the request's first byte was about to be written

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        self.traced = True
        if event.endswith("send_request_headers.started"):
            self.sent = True

    def may_have_arrived(self, exc: BaseException) -> bool:
        """Whether the request may have reached upstream before ``exc``."""
        if self.sent:
            return True
        if self.traced:
            return False  # the steps were reported and sending never began
        unsent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        return not isinstance(exc, (*unsent, httpx.UnsupportedProtocol))


def _fields(content: bytes) -> tuple[Any, str | None, str | None, str | None]:
    """``(payload, error code, error message, trace id)`` of an answer, whatever its shape."""
    try:
        payload = json.loads(content)
    except (ValueError, RecursionError):
        return None, None, None, None
    if not isinstance(payload, dict):
        return payload, None, None, None
    error = payload.get("error")
    source = error if isinstance(error, dict) else payload
    code, message, trace = source.get("code"), source.get("message"), payload.get("trace_id")
    return (
        payload,
        code if isinstance(code, str) and code else None,
        message[:MESSAGE_LIMIT] if isinstance(message, str) and message else None,
        trace if isinstance(trace, str) and trace else None,
    )


def _retry_after(value: str | None) -> str:
    """Upstream's ``Retry-After`` as whole seconds, or the default when it gave none we read."""
    try:
        seconds = float((value or "").strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return str(DEFAULT_RETRY_AFTER)
    return str(min(math.ceil(seconds), 3600))


def _task_id(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    for name in ("task_id", "id"):
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _answer(call: Creation, what: str, response: httpx.Response) -> Created:
    """What an answer means: the created task, or the error it amounts to."""
    status = response.status_code
    payload, code, message, trace_id = _fields(response.content)
    said = (
        f"{what} answered {status}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else "")
    )
    if 200 <= status < 300:
        task_id = _task_id(payload)
        if task_id is not None:
            return Created(task_id, trace_id, response.content, status)
        raise OutcomeUnknown(
            call.provider,
            f"{what} answered {status} without a task id (expected task_id or id)",
            trace_id=trace_id,
        )
    kw: dict[str, Any] = {"status_code": status, "upstream_code": code}
    if status in (400, 422):
        text = message or f"{what} answered {status}: upstream refused the request"
        raise CreationRejected(call.provider, text, code=code, **kw)
    if status == 429:
        retry_after = _retry_after(response.headers.get("retry-after"))
        raise CreationRateLimited(
            call.provider,
            f"{said}; retry after {retry_after} s (nothing was created)",
            headers={"Retry-After": retry_after},
            **kw,
        )
    if status in (401, 403):
        raise CreationFailed(
            call.provider,
            f"{said}; check {call.token_setting} and its account (nothing was created)",
            code="upstream_unauthorized",
            **kw,
        )
    raise CreationFailed(call.provider, f"{said} (nothing was created)", **kw)


def creation_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A client for creation calls: no keep-alive (a stale pooled connection could not tell
    "not sent" from "sent"), no redirects, no retries."""
    return httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"user-agent": f"taskhook/{__version__}"},
        follow_redirects=False,
    )


async def send(
    call: Creation, within: float, *, transport: httpx.AsyncBaseTransport | None = None
) -> Created:
    """Make ``call`` once, within ``within`` seconds; the created task or a CreationError."""
    what = f"{call.provider}: POST {httpx.URL(call.url).path}"
    progress = _Progress()
    headers = {"authorization": f"Bearer {call.token}", "accept": "application/json"}
    limits = httpx.Timeout(within, connect=min(within, CONNECT_TIMEOUT))
    try:
        async with asyncio.timeout(within), creation_client(transport) as http:
            response = await http.post(
                call.url,
                json=dict(call.body),
                headers=headers,
                timeout=limits,
                extensions={"trace": progress},
            )
    except (TimeoutError, httpx.TransportError, httpx.DecodingError) as exc:
        reason = (
            "timed out"
            if isinstance(exc, TimeoutError | httpx.TimeoutException)
            else (f"failed ({type(exc).__name__})")
        )
        if progress.may_have_arrived(exc):
            raise OutcomeUnknown(
                call.provider,
                f"{what} {reason} after the request was sent",
            ) from exc
        raise CreationFailed(
            call.provider,
            f"{what} {reason} before anything was sent (nothing was created)",
            code="upstream_unreachable",
        ) from exc
    return _answer(call, what, response)
