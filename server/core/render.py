"""The one JSON rendering of a task, shared by the API, the dashboard and the events.

``task_json`` is what ``GET /tasks/{id}`` answers; an event's ``data`` is the
same rendering of the task at that event's commit, so both say the same
thing. The archived copy's ``url`` (``/files/<sha256>``) is built here, from
the digest the store recorded: where files are served is the web layer's
policy, not the store's.
"""

from __future__ import annotations

import json
from typing import Any

from server.core.types import ArchiveOutcome, TaskRecord, iso_time

#: Where an archived file is served; followed by its SHA-256.
FILES_PATH = "/files/"


def file_url(sha256: str) -> str:
    return f"{FILES_PATH}{sha256}"


def archive_json(outcome: ArchiveOutcome) -> dict[str, Any]:
    """What a result shows of its copy: ``archived`` once copied, else ``archive_error``."""
    if outcome.status == "done" and outcome.sha256 is not None:
        return {
            "archived": {
                "url": file_url(outcome.sha256),
                "sha256": outcome.sha256,
                "bytes": outcome.bytes,
                "content_type": outcome.content_type,
            }
        }
    return {
        "archive_error": {
            "code": outcome.error,
            "message": outcome.message,
            "attempts": outcome.attempts,
            "final": outcome.status == "failed",
        }
    }


def task_json(record: TaskRecord) -> dict[str, Any]:
    """The merged task as the API shows it (see SPEC "The merged task")."""
    s = record.state
    results = []
    for result in s.results:
        item = result.to_json()
        outcome = record.archives.get(result.url)
        if outcome is not None:
            item.update(archive_json(outcome))
        results.append(item)
    body: dict[str, Any] = {
        "task_id": s.task_id,
        "provider": s.provider,
        "status": s.status.value,
        "upstream_status": s.upstream_status,
        "trace_id": s.trace_id,
        "results": results,
        "error": s.error.to_json() if s.error else None,
        "metadata": dict(record.metadata),
        "created_at": iso_time(record.created_at),
        "updated_at": iso_time(record.updated_at),
        "completed_at": iso_time(record.completed_at),
        "deliveries": record.deliveries,
        "checks": record.checks,
        "next_check_at": iso_time(record.next_check_at),
        "last_source": record.last_source,
    }
    if s.conflicts:
        body["conflicts"] = [c.to_json() for c in s.conflicts]
    if s.upstream:
        body["upstream"] = dict(s.upstream)
    return body


def event_json(event_type: str, timestamp: float, record: TaskRecord) -> dict[str, Any]:
    """An event's body: ``{"type", "timestamp", "data"}``, data the task at that commit."""
    return {"type": event_type, "timestamp": iso_time(timestamp), "data": task_json(record)}


def dumps(value: Any) -> str:
    """Compact JSON text, as kept in the database."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_text(event_type: str, timestamp: float, data: str) -> str:
    """``event_json`` as JSON text, given the task's JSON text (rendered once per change)."""
    return f'{{"type":{_quoted(event_type)},"timestamp":"{iso_time(timestamp)}","data":{data}}}'


def retyped(body: str, source_type: str, event_type: str) -> str:
    """The body of an event of ``event_type`` made from ``body``, the same change's
    event of ``source_type`` (``event_text`` of the same time and data)."""
    head = f'{{"type":{_quoted(source_type)},'
    if not body.startswith(head):
        raise ValueError(f"an event body of type {source_type!r} does not begin {head!r}")
    return f'{{"type":{_quoted(event_type)},{body[len(head) :]}'


def _quoted(event_type: str) -> str:
    quoted = _QUOTED.get(event_type)
    if quoted is None:
        quoted = _QUOTED.setdefault(event_type, dumps(event_type))
    return quoted


#: Event types as JSON strings (a handful of names, each quoted once).
_QUOTED: dict[str, str] = {}
