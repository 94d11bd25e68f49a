"""Seedance 2.0: videos from a task API with no batch query.

Token ``SEEDANCE2_API_KEY``; query ``GET {SEEDANCE2_BASE_URL}/v1/video/generations/{task_id}``,
one call per task. Callbacks and answers share one body:
``{code, message, data: {task_id, status, result_url, fail_reason, data: {...}}}``
where ``data.data`` is upstream's raw output (its ``id`` is the model's id, not ours).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from server.core.types import ErrorInfo, Observation, Result, Status
from server.errors import UpstreamError, worst
from server.providers import fields
from server.providers.base import Answer, Client, Fetch, Poll, Provider
from server.providers.creation import Creation
from server.providers.upstream import (
    Fetched,
    HTTPClient,
    distinct_by_key,
    gather_bounded,
    per_asked,
)

if TYPE_CHECKING:
    from server.settings import Settings

_FAIL_REASON_CODE = re.compile(r"\bcode:\s*([A-Za-z0-9_.\-]+)")


class Seedance2Client(HTTPClient):
    """``GET {base}/v1/video/generations/{task_id}``; no batch, so many single calls."""

    def __init__(
        self, base_url: str, api_key: str, http: httpx.AsyncClient, concurrency: int = 4
    ) -> None:
        super().__init__("seedance2", api_key, http)
        self.base_url = base_url.rstrip("/")
        self.concurrency = max(1, concurrency)

    async def fetch(self, ids: Sequence[str]) -> Fetch:
        """Single calls with bounded concurrency; answers that came are kept if others failed."""
        fetched = await self.retrieve_many(ids)
        errors: list[UpstreamError] = []
        calls: list[str] = []
        for got in fetched.values():
            if isinstance(got, UpstreamError):
                if any(got is e for e in errors):
                    continue  # ids not sent after a 401/429 carry the error that stopped them
                errors.append(got)
                calls.append(got.kind)
            else:
                calls.append("ok" if got is not None else "not_yet")
        answered = {k: v for k, v in fetched.items() if not isinstance(v, UpstreamError)}
        return Fetch(answered, tuple(calls), worst(errors) if errors else None)

    async def retrieve(self, task_id: str) -> Answer | None:
        """The task's answer; None on 404 or an empty ``data`` (not known yet)."""
        url = f"{self.base_url}/v1/video/generations/{quote(task_id, safe='')}"
        what = f"GET {httpx.URL(url).path}"
        response = await self._send("GET", url, what)
        if response.status_code == 404 or _not_exist(response):
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
        are asked once. An UpstreamUnauthorized or RateLimited stops the
        sending: ids not yet sent when it came carry that same error.
        """
        by_key = await gather_bounded(distinct_by_key(ids), self.retrieve, self.concurrency)
        return per_asked(ids, by_key)


def _not_exist(response: httpx.Response) -> bool:
    """The gateway's 400 ``task_not_exist``: this one id is unknown, the provider is fine."""
    if not 400 <= response.status_code < 500:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == "task_not_exist"


class Seedance2(Provider):
    name = "seedance2"
    family = "seedance2"
    token_settings = ("SEEDANCE2_API_KEY",)
    poll: Poll = "single"
    result_kind = "video"
    id_hint = "expected a string in data.task_id"

    def client(self, settings: Settings, http: httpx.AsyncClient) -> Client | None:
        if not settings.seedance2_api_key:
            return None
        return Seedance2Client(settings.seedance2_base_url, settings.seedance2_api_key, http)

    def creation(
        self, settings: Settings, request: Mapping[str, Any], callback_url: str
    ) -> Creation | None:
        """``POST {base}/v1/video/generations``, no callback: the gateway has none; it is polled."""
        if not settings.seedance2_api_key:
            return None
        url = f"{settings.seedance2_base_url.rstrip('/')}/v1/video/generations"
        body = {k: v for k, v in request.items() if k != "callback_url"}
        return Creation(self.name, url, settings.seedance2_api_key, "SEEDANCE2_API_KEY", body)

    def parse_body(self, body: Mapping[str, Any], wrapper: Mapping[str, Any]) -> Observation:
        data = fields.mapping(body.get("data"))
        output = fields.mapping(data.get("data"))  # upstream's raw output
        task_id = fields.task_id(data.get("task_id")) or fields.task_id(body.get("task_id"))
        raw = fields.text(data.get("status"))
        status = self.status(raw)
        times = ("submit_time", "start_time", "finish_time", "progress", "request_id", "action")
        upstream = {**fields.scalars(data, only=times), **fields.scalars(output, only=("model",))}
        if (upstream_id := fields.text(output.get("id"))) is not None:
            upstream["upstream_task_id"] = upstream_id
        results: tuple[Result, ...] = ()
        error = None
        if status is Status.SUCCEEDED:
            # On success fail_reason is a legacy copy of result_url (old records keep
            # the URL only there), not an error.
            content = fields.mapping(output.get("content"))
            url = (
                fields.text(data.get("result_url"))
                or fields.text(content.get("video_url"))
                or _url(data.get("fail_reason"))
            )
            if url is None:
                status = None
            else:
                skip = frozenset({"id", "status", "content"})
                extra = {
                    **fields.scalars(output, skip=skip),
                    **fields.scalars(data, only=("original_result_url",)),
                }
                results = (Result(url, "video", extra),)
        elif status is Status.FAILED:
            # result_url may hold the reason text here (the gateway falls back to it).
            reason = fields.text(data.get("fail_reason"))
            match = _FAIL_REASON_CODE.search(reason) if reason else None
            raw_code, raw_message = fields.error_info(output.get("error"))
            code = match.group(1) if match else raw_code
            message = reason or raw_message or f"upstream reported {raw!r} without a reason"
            error = ErrorInfo(code, message)
        return Observation(
            self.name,
            task_id,
            status,
            upstream_status=raw,
            # data.request_id is a request id, not a trace id: it goes to upstream.
            trace_id=fields.text(body.get("trace_id")),
            results=results,
            error=error,
            upstream=upstream,
        )


def _url(value: Any) -> str | None:
    """``value`` if it is an http(s) URL."""
    found = fields.text(value)
    return found if found is not None and found.startswith(("https://", "http://")) else None


SEEDANCE2 = Seedance2()
