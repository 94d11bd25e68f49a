"""The fake upstream's creation endpoints: forced outcomes, per-provider settings, call log.

A creation call (``POST /seedream/images``, ``/seedance/videos``, ``/dreamina/videos``,
``/v1/video/generations``) is answered by the first forced outcome queued for its
provider (then those queued for every provider), else ``ok``. Outcomes:

- ``ok``: the task is created and the asynchronous answer goes out;
- ``400`` / ``422`` / ``429`` / ``401`` / ``403`` / ``500``: that status with the
  provider's error shape (``code``/``message`` may be given; a 429 carries
  ``Retry-After`` unless ``retry_after`` is ``null``); nothing is created;
- ``hang``: the task is created, then the answer waits ``seconds`` (at most 60, less
  if the client hangs up) and goes out as for ``ok`` (its callback may come first);
- ``close``: the task is created, then the connection is closed without an answer
  (``"create": false``: upstream never created it).

Every call is logged (the bearer token is never kept: only whether
it matched) so tests can assert exactly which creations arrived with which body.
Documented shapes and their sources: ``docs/submit-upstream.md``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from scripts.fake_upstream_payloads import PROVIDERS, FakeTask

#: Creation path of each provider, as the upstream documents name it.
CREATE_PATHS = {
    "seedream": "/seedream/images",
    "seedance": "/seedance/videos",
    "dreamina": "/dreamina/videos",
    "seedance2": "/v1/video/generations",
}
ERROR_STATUSES = ("400", "422", "429", "401", "403", "500")
OUTCOMES = ("ok", *ERROR_STATUSES, "hang", "close")
MAX_HANG_SECONDS = 60.0
ANSWER_SHAPES = ("full", "minimal")
#: Fields each creation call must carry (OpenAPI ``required``; Seedance 2.0: see the doc).
REQUIRED = {
    "seedream": ("model", "prompt"),
    "seedance": ("model", "content"),
    "dreamina": ("image_url", "audio_url"),
    "seedance2": ("model",),
}

# Default (code, message) per status; AceData's come from its OpenAPI examples,
# Seedance 2.0's from new-api's task relay (``fail_to_fetch_task`` wraps upstream errors).
_ACE_ERRORS = {
    400: ("bad_request", "model is invalid."),
    422: ("unprocessable_entity", "fake upstream: the request could not be processed"),
    429: ("too_many_requests", "You have exceeded the rate limit."),
    401: ("invalid_token", "The specified token is invalid or wrong."),
    403: (
        "used_up",
        "Your balance is not sufficient for current request, please buy more in Ace Data Cloud.",
    ),
    500: ("api_error", "Internal server error."),
}
_S2_ERRORS = {
    400: ("invalid_request", "prompt is required"),
    422: ("invalid_request", "fake upstream: the request could not be processed"),
    429: ("fail_to_fetch_task", "当前分组上游负载已饱和，请稍后再试"),
    401: ("invalid_api_key", "invalid or missing API key"),
    403: ("fail_to_fetch_task", "fake upstream: access denied by the upstream channel"),
    500: ("fail_to_fetch_task", "fake upstream: the upstream channel failed"),
}


@dataclass(frozen=True)
class Forced:
    """One queued outcome of a creation call."""

    outcome: str = "ok"
    code: str | None = None  # error outcomes: the error code to answer
    message: str | None = None  # error outcomes: the error message to answer
    retry_after: float | None = -1.0  # 429: seconds; None omits the header; < 0: the fake's
    seconds: float = 0.0  # hang: how long
    create: bool = True  # close: whether upstream created the task before hanging up

    @classmethod
    def parse(cls, item: Any) -> Forced:
        """``"429"`` or ``{"outcome": "429", "retry_after": 7}``; ValueError when invalid."""
        spec: Mapping[str, Any] = {"outcome": item} if isinstance(item, str) else item
        if not isinstance(spec, Mapping):
            raise ValueError(f"outcome {item!r} must be a string or an object")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(spec) - known):
            raise ValueError(f"unknown outcome options {unknown}; known: {sorted(known)}")
        outcome = spec.get("outcome", "ok")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        retry_after = spec.get("retry_after", -1.0)
        seconds = float(spec.get("seconds", 0.0))
        if not 0 <= seconds <= MAX_HANG_SECONDS:
            raise ValueError(f"hang seconds {seconds!r} must be between 0 and {MAX_HANG_SECONDS:g}")
        for name in ("code", "message"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise ValueError(f"{name} {spec[name]!r} must be a string")
        return cls(
            outcome=outcome,
            code=spec.get("code"),
            message=spec.get("message"),
            retry_after=None if retry_after is None else float(retry_after),
            seconds=seconds,
            create=bool(spec.get("create", True)),
        )


@dataclass(frozen=True)
class CreationSettings:
    """How created tasks behave; ``None`` fields fall back to the wider setting."""

    latency: float | None = None  # seconds every creation call waits before it answers
    finish_after: float | None = None  # seconds from creation until the task finishes
    task_outcome: str | None = None  # "succeeded" | "failed"
    answer_shape: str | None = None  # "full" | "minimal" (see ``async_answer``)

    def over(self, base: CreationSettings) -> CreationSettings:
        """These settings, with base's where these have none."""
        mine = {k: v for k, v in asdict(self).items() if v is not None}
        return replace(base, **mine)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> CreationSettings:
        latency, finish = body.get("latency"), body.get("finish_after")
        for name, value in (("latency", latency), ("finish_after", finish)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"{name} {value!r} must be a non-negative number of seconds")
        outcome, shape = body.get("task_outcome"), body.get("answer_shape")
        if outcome not in (None, "succeeded", "failed"):
            raise ValueError(f"task_outcome {outcome!r} is not 'succeeded' or 'failed'")
        if shape not in (None, *ANSWER_SHAPES):
            raise ValueError(f"answer_shape {shape!r} is not one of {ANSWER_SHAPES}")
        return cls(
            latency=None if latency is None else min(float(latency), MAX_HANG_SECONDS),
            finish_after=None if finish is None else float(finish),
            task_outcome=outcome,
            answer_shape=shape,
        )


class CreationDesk:
    """Forced outcomes, settings and the log of every creation call of one fake."""

    def __init__(self, defaults: CreationSettings) -> None:
        self.defaults = defaults
        self.queues: dict[str, list[Forced]] = defaultdict(list)  # "*" or provider
        self.settings: dict[str, CreationSettings] = {}  # "*" or provider
        self.log: list[dict[str, Any]] = []

    def configure(self, body: Mapping[str, Any]) -> None:
        """Apply a ``POST /_fake/creations`` body; nothing changes when part of it is invalid."""
        target = body.get("provider") or "*"
        if target != "*" and target not in PROVIDERS:
            raise ValueError(f"provider {target!r} is not one of {', '.join(PROVIDERS)}")
        items = body.get("next") or []
        if not isinstance(items, list):
            raise ValueError("next must be a list of outcomes")
        forced = [Forced.parse(item) for item in items]
        settings = CreationSettings.parse(body)
        if body.get("clear"):
            self.queues[target], self.settings[target] = [], CreationSettings()
        if body.get("clear_log"):
            self.log.clear()
        self.queues[target].extend(forced)
        self.settings[target] = settings.over(self.settings.get(target, CreationSettings()))

    def draw(self, provider: str) -> Forced:
        """The outcome of this call: the provider's queue first, then every provider's."""
        for queue in (self.queues[provider], self.queues["*"]):
            if queue:
                return queue.pop(0)
        return Forced()

    def settings_for(self, provider: str) -> CreationSettings:
        wide = self.settings.get("*", CreationSettings()).over(self.defaults)
        return self.settings.get(provider, CreationSettings()).over(wide)

    def record(
        self, provider: str, path: str, headers: Mapping[str, str], authorized: bool, raw: bytes
    ) -> dict[str, Any]:
        """Log one call as received; the caller fills in what was answered."""
        text = raw.decode("utf-8", "replace")
        entry: dict[str, Any] = {
            "seq": len(self.log) + 1,
            "at": time.time(),
            "provider": provider,
            "path": path,
            "headers": {k: "<redacted>" if k == "authorization" else v for k, v in headers.items()},
            "authorized": authorized,
            "body": parse_json(text),
            "body_text": text,
            "outcome": None,  # what the fake did: an OUTCOMES value, "unauthorized", "invalid"
            "status": None,  # the HTTP status answered; None while pending or for "close"
            "client_gone": False,  # hang: the client hung up before the answer
            "task_id": None,
            "trace_id": None,
        }
        self.log.append(entry)
        return entry

    def calls_json(self, provider: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.log if provider is None or e["provider"] == provider]

    def settings_json(self) -> dict[str, Any]:
        return {
            "next": {k: [asdict(f) for f in q] for k, q in self.queues.items() if q},
            "settings": {k: asdict(s) for k, s in self.settings.items()},
            "defaults": asdict(self.defaults),
            "calls": len(self.log),
        }


def parse_json(text: str) -> Any:
    """The JSON value of ``text``, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def missing_fields(provider: str, body: Any) -> str | None:
    """Why this creation body is refused (400), or None when it carries what is required."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    missing = [name for name in REQUIRED[provider] if body.get(name) in (None, "", [])]
    if provider == "seedance2" and not body.get("prompt") and not body.get("content"):
        missing.append("prompt")
    if missing:
        return f"{', '.join(missing)} is required"
    url = body.get("callback_url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        return "callback_url must be an http(s) URL"
    return None


def is_async(body: Mapping[str, Any]) -> bool:
    """AceData answers at once when the call names a ``callback_url`` or sets ``async``."""
    return bool(body.get("callback_url")) or body.get("async") is True


def async_answer(task: FakeTask, shape: str, model: Any, now: float) -> dict[str, Any]:
    """The answer of an accepted creation.

    AceData (guides, "Asynchronous Callback"): ``{"task_id"}``; ``full`` adds the
    ``trace_id`` the fake gave the task. Seedance 2.0 (new-api task relay): ``full`` is
    the OpenAI-style video object (``id`` and ``task_id`` both the public id), ``minimal``
    the older ``{"task_id"}``.
    """
    if task.provider != "seedance2":
        if shape == "minimal":
            return {"task_id": task.task_id}
        return {"task_id": task.task_id, "trace_id": task.trace_id}
    if shape == "minimal":
        return {"task_id": task.task_id}
    return {
        "id": task.task_id,
        "task_id": task.task_id,
        "object": "video",
        "model": model if isinstance(model, str) else "",
        "status": "queued",
        "progress": 0,
        "created_at": int(now),
    }


def error_body(
    provider: str, status: int, code: str | None, message: str | None, trace_id: str
) -> dict[str, Any]:
    """A refused creation's body in the provider's error shape."""
    default_code, default_message = (_S2_ERRORS if provider == "seedance2" else _ACE_ERRORS)[status]
    code, message = code or default_code, message or default_message
    if provider == "seedance2":
        return {"code": code, "message": message, "data": None}
    return {"success": False, "error": {"code": code, "message": message}, "trace_id": trace_id}
