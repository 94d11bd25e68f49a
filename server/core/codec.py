"""TaskState <-> a JSON-safe dict, for storing the merged state.

``state_from_dict(state_to_dict(s)) == s`` for every state whose result
extras and upstream values are JSON values (parse only produces scalars).
The stored shape keeps a result's ``extra`` apart from ``url`` and ``kind``
(unlike the API's flat ``Result.to_json``), so that an extra key named "url"
or "kind" cannot clobber them on the way back. Reading is strict: this is our
own data, and a row we cannot read should fail loudly, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.core.types import Conflict, ErrorInfo, Result, Status, TaskState


class CodecError(ValueError):
    """A stored state does not have the shape ``state_to_dict`` writes."""


def state_to_dict(state: TaskState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "provider": state.provider,
        "status": state.status.value,
        "upstream_status": state.upstream_status,
        "trace_id": state.trace_id,
        "results": [_result_to_dict(r) for r in state.results],
        "error": _error_to_dict(state.error),
        "conflicts": [
            {
                "status": c.status.value,
                "upstream_status": c.upstream_status,
                "error": _error_to_dict(c.error),
                "results": [_result_to_dict(r) for r in c.results],
            }
            for c in state.conflicts
        ],
        "upstream": dict(state.upstream),
    }


def state_from_dict(data: Any) -> TaskState:
    """The state ``state_to_dict`` wrote; optional fields may be missing (older rows)."""
    data = _object(data, "state")
    return TaskState(
        task_id=_string(data.get("task_id"), "task_id"),
        provider=_string(data.get("provider"), "provider"),
        status=_status(data.get("status", Status.PENDING.value), "status"),
        upstream_status=_optional_string(data.get("upstream_status"), "upstream_status"),
        trace_id=_optional_string(data.get("trace_id"), "trace_id"),
        results=_results(data.get("results", []), "results"),
        error=_error(data.get("error"), "error"),
        conflicts=tuple(
            _conflict(c, f"conflicts[{i}]")
            for i, c in enumerate(_array(data.get("conflicts", []), "conflicts"))
        ),
        upstream=dict(_object(data.get("upstream", {}), "upstream")),
    )


def _result_to_dict(result: Result) -> dict[str, Any]:
    return {"url": result.url, "kind": result.kind, "extra": dict(result.extra)}


def _error_to_dict(error: ErrorInfo | None) -> dict[str, Any] | None:
    return None if error is None else {"code": error.code, "message": error.message}


def _conflict(data: Any, where: str) -> Conflict:
    data = _object(data, where)
    return Conflict(
        status=_status(data.get("status"), f"{where}.status"),
        upstream_status=_optional_string(data.get("upstream_status"), f"{where}.upstream_status"),
        error=_error(data.get("error"), f"{where}.error"),
        results=_results(data.get("results", []), f"{where}.results"),
    )


def _results(data: Any, where: str) -> tuple[Result, ...]:
    return tuple(_result(r, f"{where}[{i}]") for i, r in enumerate(_array(data, where)))


def _result(data: Any, where: str) -> Result:
    data = _object(data, where)
    kind = data.get("kind")
    if kind not in ("image", "video"):
        raise CodecError(f"{where}.kind is {kind!r}; expected 'image' or 'video'")
    extra = dict(_object(data.get("extra", {}), f"{where}.extra"))
    return Result(url=_string(data.get("url"), f"{where}.url"), kind=kind, extra=extra)


def _error(data: Any, where: str) -> ErrorInfo | None:
    if data is None:
        return None
    data = _object(data, where)
    return ErrorInfo(
        code=_optional_string(data.get("code"), f"{where}.code"),
        message=_string(data.get("message"), f"{where}.message"),
    )


def _status(value: Any, where: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise CodecError(f"{where} is {value!r}; expected one of {known}") from None


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CodecError(f"{where} is {type(value).__name__}; expected an object")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise CodecError(f"{where} is {type(value).__name__}; expected an array")
    return list(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise CodecError(f"{where} is {type(value).__name__}; expected a string")
    return value


def _optional_string(value: Any, where: str) -> str | None:
    return None if value is None else _string(value, where)
