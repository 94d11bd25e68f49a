"""Provider payloads -> one ``Observation``.

Pure: bytes or decoded JSON in, an ``Observation`` or a ``ParseError`` out; no
network, clock or database. Every shape is read leniently: a field of an
unexpected type is skipped as if absent, never an error. The only errors are
"this is not JSON" and "this names no task", because those are the only things
a sender can fix (the routes answer 400 and 422 and quarantine the body).

A payload is either a bare body (what a callback carries, and what a tasks
endpoint keeps under ``response``) or the tasks-endpoint wrapper
``{id, trace_id, request, response, created_at, ...}``; both are accepted for
every provider.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NoReturn

from server.core.ids import task_key
from server.core.types import PROVIDERS, ErrorInfo, Observation, Result, Status
from server.errors import NoTaskId, NotJSON

#: Longer "ids" are junk, not ids (AceData's are 36 characters, Seedance 2.0's about 41).
MAX_TASK_ID_LENGTH = 256


# Every status word any provider uses, normalised (lower case, "_" for "-" and " ").
_STATUS_WORDS: dict[str, Status] = {
    **dict.fromkeys(
        ("not_start", "pending", "queued", "queuing", "submitted", "waiting", "created"),
        Status.QUEUED,
    ),
    **dict.fromkeys(
        ("running", "processing", "in_progress", "generating", "started"), Status.RUNNING
    ),
    **dict.fromkeys(
        ("succeeded", "success", "successful", "done", "completed", "complete", "finished"),
        Status.SUCCEEDED,
    ),
    # Upstream's own "expired" (it gave up on the task) is a failure it reports,
    # unlike our Status.EXPIRED, which only means we stopped waiting.
    **dict.fromkeys(
        ("failed", "failure", "fail", "error", "expired", "cancelled", "canceled"), Status.FAILED
    ),
}

_FAIL_REASON_CODE = re.compile(r"\bcode:\s*([A-Za-z0-9_.\-]+)")


def decode(body: bytes) -> Any:
    """The JSON value of a raw body, or ``NotJSON`` saying why not."""
    try:
        # utf-8-sig: a leading byte-order mark is harmless, so it is tolerated.
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotJSON(f"body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite, parse_int=_finite_int
        )
    except RecursionError:
        raise NotJSON("body nests JSON arrays/objects deeper than we read") from None
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # an integer longer than Python's digit limit
        raise NotJSON("body is not valid JSON: it holds a number too long to read") from None


def _reject_constant(name: str) -> NoReturn:
    raise NotJSON(f"body is not valid JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    """A JSON number as a float; one that overflows a double (``1e999``) is refused."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise NotJSON(f"body holds the number {text[:40]}, which overflows a double")
    return value


def _finite_int(text: str) -> int:
    """A JSON integer; one beyond a double's range (over about 1.8e308) is refused."""
    value = int(text)
    if len(text) > 300:
        try:
            float(value)
        except OverflowError:
            raise NotJSON(
                f"body holds a {len(text)}-digit integer, which overflows a double"
            ) from None
    return value


def parse_body(provider: str, body: bytes) -> Observation:
    return parse_payload(provider, decode(body))


def parse_payload(provider: str, payload: Any) -> Observation:
    """What ``payload`` (bare body or tasks-endpoint wrapper) says about its task.

    Raises ``ValueError`` for an unknown provider (a caller's bug: routes 404
    first) and ``NoTaskId`` when no task id can be found.
    """
    parser = PARSERS.get(provider)
    if parser is None:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    if not isinstance(payload, Mapping):
        raise NoTaskId(
            f"{provider} payload is a JSON {_json_type(payload)}, not an object naming a task",
            provider=provider,
        )
    if not _is_wrapper(payload):
        observation = parser(payload)
        if observation.task_id is None:
            _no_task_id(provider, payload)
        return observation

    wrapper_id = _task_id(payload.get("id"))
    wrapper_trace = _text(payload.get("trace_id"))
    wrapper_upstream = _scalars(payload, only=("created_at",))
    response = payload.get("response")
    if not isinstance(response, Mapping) or not response:
        # The task exists upstream but has no answer yet: "not yet", not an error.
        if wrapper_id is None:
            _no_task_id(provider, payload)
        return Observation(provider, wrapper_id, trace_id=wrapper_trace, upstream=wrapper_upstream)
    observation = parser(response)
    task_id = wrapper_id or observation.task_id
    if task_id is None:
        _no_task_id(provider, payload)
    return replace(
        observation,
        task_id=task_id,
        trace_id=observation.trace_id or wrapper_trace,
        upstream={**wrapper_upstream, **observation.upstream},
    )


def _is_wrapper(payload: Mapping[str, Any]) -> bool:
    if "response" in payload:
        return True
    bare_keys = ("task_id", "success", "data", "code", "error")
    return "id" in payload and not any(key in payload for key in bare_keys)


def _no_task_id(provider: str, payload: Mapping[str, Any]) -> NoReturn:
    if "items" in payload:
        hint = "this looks like a retrieve_batch answer; parse each of its items"
    elif "error" in payload:
        hint = "this looks like an error answer, which names no task"
    elif provider == "seedance2":
        hint = "expected a string in data.task_id"
    else:
        hint = "expected a string in task_id, or the task wrapper's id"
    raise NoTaskId(f"{provider} payload names no task id: {hint}", provider=provider)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


# -- lenient field readers -----------------------------------------------------


def _text(value: Any) -> str | None:
    """A non-blank string we can store, else None (odd types count as absent)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
    except UnicodeEncodeError:
        return None
    return value


def _task_id(value: Any) -> str | None:
    """An id we can store: not too long, and not made of dashes only (those have no key)."""
    text = _text(value)
    if text is None or len(text) > MAX_TASK_ID_LENGTH or not task_key(text):
        return None
    return text


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return _text(value) is not None
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return isinstance(value, int)  # bool included


def _scalars(
    source: Mapping[str, Any],
    *,
    only: tuple[str, ...] | None = None,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The JSON-scalar fields of ``source`` (nested values and nulls are left out)."""
    keys = only if only is not None else [k for k in source if isinstance(k, str)]
    return {k: source[k] for k in keys if k not in skip and k in source and _is_scalar(source[k])}


def _status_word(raw: str | None) -> Status | None:
    if raw is None:
        return None
    return _STATUS_WORDS.get(raw.strip().lower().replace("-", "_").replace(" ", "_"))


def _error_info(source: Any) -> tuple[str | None, str | None]:
    """(code, message) of an ``error`` field that is an object or a bare string."""
    if isinstance(source, Mapping):
        return _text(source.get("code")), _text(source.get("message"))
    return None, _text(source)


def _unsuccessful(
    provider: str, body: Mapping[str, Any], task_id: str | None
) -> Observation | None:
    """AceData's ``success: false``: final failure with an error code, else a hiccup."""
    if body.get("success") is not False:
        return None
    trace_id = _text(body.get("trace_id"))
    code, message = _error_info(body.get("error"))
    if code is None:
        # AceData's own SDK retries these too: the task itself has not failed.
        return Observation(provider, task_id, trace_id=trace_id, transient=True)
    return Observation(
        provider, task_id, Status.FAILED, trace_id=trace_id, error=ErrorInfo(code, message or code)
    )


# -- one parser per provider ---------------------------------------------------
# Each takes a bare body and may return task_id None; parse_payload resolves it.


def _parse_seedream(body: Mapping[str, Any]) -> Observation:
    task_id = _task_id(body.get("task_id"))
    if (failure := _unsuccessful("seedream", body, task_id)) is not None:
        return failure
    data = body.get("data")
    items = [data] if isinstance(data, Mapping) else data if isinstance(data, list) else []
    results = tuple(
        Result(url, "image", _scalars(item, skip=frozenset({"image_url"})))
        for item in items
        if isinstance(item, Mapping) and (url := _text(item.get("image_url"))) is not None
    )
    # SeeDream carries no status string, so upstream_status stays None rather
    # than one we made up; success is told by the images themselves.
    return Observation(
        "seedream",
        task_id,
        Status.SUCCEEDED if results else None,
        trace_id=_text(body.get("trace_id")),
        results=results,
    )


def _parse_seedance(body: Mapping[str, Any]) -> Observation:
    # data.task_id is the upstream model's id ("cgt-..."), never ours: kept in upstream.
    return _parse_acedata_video("seedance", body, id_in_data=False, input_keys=frozenset())


def _parse_dreamina(body: Mapping[str, Any]) -> Observation:
    # image_url/audio_url in data are the portrait and voice the caller sent:
    # inputs, not results, and already in the raw delivery; so they stay out.
    inputs = frozenset({"image_url", "audio_url"})
    return _parse_acedata_video("dreamina", body, id_in_data=True, input_keys=inputs)


def _parse_acedata_video(
    provider: str, body: Mapping[str, Any], *, id_in_data: bool, input_keys: frozenset[str]
) -> Observation:
    data = _mapping(body.get("data"))
    task_id = _task_id(body.get("task_id"))
    if task_id is None and id_in_data:
        task_id = _task_id(data.get("task_id"))  # Dreamina: the UUID without dashes
    if (failure := _unsuccessful(provider, body, task_id)) is not None:
        return failure
    raw = _text(data.get("status"))
    status = _status_word(raw)
    video_url = _text(data.get("video_url"))
    if raw is None and video_url is not None:
        status = Status.SUCCEEDED  # no status word at all, but the video is proof enough
    upstream = _scalars(data, only=("model",))
    if not id_in_data and (upstream_id := _text(data.get("task_id"))) is not None:
        upstream["upstream_task_id"] = upstream_id
    results: tuple[Result, ...] = ()
    error = None
    if status is Status.SUCCEEDED:
        if video_url is None:
            status = None  # success without a result says nothing yet
        else:
            skip = frozenset({"task_id", "status", "video_url"}) | input_keys
            results = (Result(video_url, "video", _scalars(data, skip=skip)),)
    elif status is Status.FAILED:
        code, message = _error_info(data.get("error") or body.get("error"))
        message = message or _text(data.get("fail_reason")) or _text(data.get("message"))
        error = ErrorInfo(code, message or f"upstream reported status {raw!r} without a reason")
    return Observation(
        provider,
        task_id,
        status,
        upstream_status=raw,
        trace_id=_text(body.get("trace_id")),
        results=results,
        error=error,
        upstream=upstream,
    )


def _parse_seedance2(body: Mapping[str, Any]) -> Observation:
    data = _mapping(body.get("data"))
    output = _mapping(data.get("data"))  # upstream's raw output
    task_id = _task_id(data.get("task_id")) or _task_id(body.get("task_id"))
    raw = _text(data.get("status"))
    status = _status_word(raw)
    times = ("submit_time", "start_time", "finish_time", "progress", "request_id", "action")
    upstream = {**_scalars(data, only=times), **_scalars(output, only=("model",))}
    if (upstream_id := _text(output.get("id"))) is not None:
        upstream["upstream_task_id"] = upstream_id
    results: tuple[Result, ...] = ()
    error = None
    if status is Status.SUCCEEDED:
        # On success fail_reason is a legacy copy of result_url, not an error.
        content = _mapping(output.get("content"))
        url = _text(data.get("result_url")) or _text(content.get("video_url"))
        if url is None:
            status = None
        else:
            skip = frozenset({"id", "status", "content"})
            extra = {**_scalars(output, skip=skip), **_scalars(data, only=("original_result_url",))}
            results = (Result(url, "video", extra),)
    elif status is Status.FAILED:
        reason = _text(data.get("fail_reason"))
        match = _FAIL_REASON_CODE.search(reason) if reason else None
        code = match.group(1) if match else None
        error = ErrorInfo(code, reason or f"upstream reported {raw!r} without a reason")
    return Observation(
        "seedance2",
        task_id,
        status,
        upstream_status=raw,
        # data.request_id is a request id, not a trace id: it goes to upstream.
        trace_id=_text(body.get("trace_id")),
        results=results,
        error=error,
        upstream=upstream,
    )


PARSERS: dict[str, Callable[[Mapping[str, Any]], Observation]] = {
    "seedream": _parse_seedream,
    "seedance": _parse_seedance,
    "dreamina": _parse_dreamina,
    "seedance2": _parse_seedance2,
}
assert set(PARSERS) == set(PROVIDERS), "one parser per provider"
