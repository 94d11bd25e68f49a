"""The upstream payload shapes the fake answers with, built from one fake task.

Shapes follow the upstream documents (``seeds/``): AceData's task wrapper and
its per-service ``response`` bodies, Seedance 2.0's ``{code, message, data}``,
and the result files those bodies point at, served by the fake itself.
"""

from __future__ import annotations

import calendar
import hmac
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

_SIGNING_KEY = b"fake-tos-signing-key"  # not a secret: it only makes altered URLs detectable
_MAGIC = {
    "jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "mp4": b"\x00\x00\x00\x18ftypmp42",
    "wav": b"RIFF",
}
ACEDATA = ("seedream", "seedance", "dreamina")
PROVIDERS = (*ACEDATA, "seedance2")
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "mp4": "video/mp4", "wav": "audio/wav"}


def task_key(task_id: str) -> str:
    return task_id.strip().lower().replace("-", "")  # same rule as server.core.ids.task_key


@dataclass
class FakeTask:
    provider: str
    task_id: str
    trace_id: str
    outcome: str  # succeeded | failed
    created_at: float
    finish_at: float
    base_url: str
    callback_url: str | None
    upstream_id: str  # SeeDance/Seedance 2.0 "cgt-..." id
    request_id: str
    dispatched: bool = False

    def finished(self, now: float) -> bool:
        return now >= self.finish_at

    def fraction(self, now: float) -> float:
        span = self.finish_at - self.created_at
        return 1.0 if span <= 0 else max(0.0, min(1.0, (now - self.created_at) / span))

    def file_url(self, suffix: str = "", ext: str = "mp4") -> str:
        return f"{self.base_url}/files/{self.provider}-{task_key(self.task_id)}{suffix}.{ext}"


def _tos_signature(name: str, date: str, expires: str) -> str:
    return hmac.new(_SIGNING_KEY, f"{name}|{date}|{expires}".encode(), sha256).hexdigest()


def seedance2_result_url(t: FakeTask, ttl: int) -> str:
    name = f"seedance2-{task_key(t.task_id)}.mp4"
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t.finish_at))
    sig = _tos_signature(name, date, str(ttl))
    return (
        f"{t.base_url}/files/{name}?X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Date={date}"
        f"&X-Tos-Expires={ttl}&X-Tos-Signature={sig}"
    )


#: How SeeDance's ``data`` looks: the seeds' object, upstream's raw object (result under
#: ``content.video_url``), a list of raw objects, or one of the three per task.
SEEDANCE_SHAPES = ("seed", "raw", "list", "mixed")


def acedata_response(
    t: FakeTask, now: float, pending: str = "status", seedance_shape: str = "seed"
) -> dict[str, Any] | None:
    """The task's ``response`` (also its bare callback body); None while there is no result."""
    if t.finished(now) and t.outcome == "failed":
        error = {"code": "generation_failed", "message": "fake upstream: the generation failed"}
        return {"success": False, "task_id": t.task_id, "trace_id": t.trace_id, "error": error}
    done = t.finished(now)
    if not done and (pending == "empty" or t.provider == "seedream"):
        return None
    head = {"success": True, "task_id": t.task_id, "trace_id": t.trace_id}
    if t.provider == "seedream":
        image = {
            "prompt": "a white siamese cat",
            "size": "2048x2048",
            "image_url": t.file_url(ext="jpg"),
        }
        return {**head, "data": [image]}
    if t.provider == "seedance":
        status = "succeeded" if done else ("queued" if t.fraction(now) < 0.5 else "running")
        shape = seedance_shape
        if shape == "mixed":
            shape = SEEDANCE_SHAPES[int(sha256(task_key(t.task_id).encode()).hexdigest(), 16) % 3]
        if shape in ("raw", "list"):
            raw: dict[str, Any] = {"id": t.upstream_id, "model": "doubao-seedance-1-0-pro-250528"}
            raw["status"] = "processing" if status == "running" else status
            if done:
                raw["content"] = {"video_url": t.file_url()}
            return {**head, "data": [raw] if shape == "list" else raw}
        data = {
            "task_id": t.upstream_id,
            "status": status,
            "video_url": t.file_url() if done else None,
        }
        return {
            **head,
            "data": {**data, "last_frame_url": None, "model": "doubao-seedance-1-0-pro-250528"},
        }
    data = {"task_id": uuid.UUID(t.task_id).hex if _is_uuid(t.task_id) else t.task_id}
    if not done:
        return {"success": True, "data": {**data, "status": "running"}}
    media = {"image_url": t.file_url("-portrait", "jpg"), "audio_url": t.file_url("-voice", "wav")}
    return {"success": True, "data": {**data, "status": "done", "video_url": t.file_url(), **media}}


def acedata_wrapper(t: FakeTask, response: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "seedream": {
            "action": "generate",
            "model": "doubao-seedream-4-0-250828",
            "prompt": "a white siamese cat",
        },
        "seedance": {
            "model": "doubao-seedance-1-0-pro-250528",
            "content": [{"type": "text", "text": "a cat"}],
        },
        "dreamina": {"model": "omnihuman-1.5", "image_url": t.file_url("-portrait", "jpg")},
    }[t.provider]
    if t.callback_url:
        request["callback_url"] = t.callback_url
    ids = {
        name: str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake:{t.provider}:{name}"))
        for name in ("api", "app", "cred", "user")
    }
    return {
        "_id": sha256(t.task_id.encode()).hexdigest()[:24],
        "id": t.task_id,
        "api_id": ids["api"],
        "application_id": ids["app"],
        "created_at": round(t.created_at, 3),
        "credential_id": ids["cred"],
        "request": request,
        "trace_id": t.trace_id,
        "type": "images" if t.provider == "seedream" else "videos",
        "user_id": ids["user"],
        "response": response,
    }


def seedance2_phase(t: FakeTask, now: float) -> tuple[str, str]:
    """Status and progress text at ``now``: NOT_START, QUEUED, IN_PROGRESS (50%..99%), final."""
    if t.finished(now):
        return ("SUCCESS" if t.outcome == "succeeded" else "FAILURE"), "100%"
    f = t.fraction(now)
    if f < 0.1:
        return "NOT_START", "0%"
    if f < 0.3:
        return "QUEUED", "0%"
    return "IN_PROGRESS", f"{50 + int(49 * (f - 0.3) / 0.7)}%"


def seedance2_body(t: FakeTask, now: float, ttl: int, in_progress: bool = False) -> dict[str, Any]:
    """The query answer, also the callback body; ``in_progress`` builds an intermediate one."""
    status, progress = ("IN_PROGRESS", "50%") if in_progress else seedance2_phase(t, now)
    final = status in ("SUCCESS", "FAILURE")
    started = status not in ("NOT_START", "QUEUED") and t.outcome == "succeeded"
    url = seedance2_result_url(t, ttl) if status == "SUCCESS" else None
    if status == "FAILURE":
        reason = "task failed, code: InvalidParameter, message: fake upstream failure"
    else:
        reason = url or ""  # on success upstream copies result_url here for older clients
    data: dict[str, Any] = {"task_id": t.task_id, "action": "generate", "status": status}
    if url:
        data["result_url"] = url  # omitted unless SUCCESS
    data.update(
        fail_reason=reason,
        submit_time=int(t.created_at),
        # 0: never started, as upstream reports failed-before-start tasks
        start_time=min(int(t.created_at) + 2, int(t.finish_at)) if started else 0,
        finish_time=int(t.finish_at) if final else 0,
        progress=progress,
        request_id=t.request_id,
    )
    if url:
        data["data"] = {
            "content": {"video_url": url},
            "id": t.upstream_id,
            "model": "doubao-seedance-2-0-260128",
            "duration": 5,
            "ratio": "16:9",
            "resolution": "720p",
            "framespersecond": 24,
            "generate_audio": True,
            "seed": 4304,
            "status": "succeeded",
            "usage": {"completion_tokens": 108900, "total_tokens": 108900},
        }
    return {"code": "success", "message": "", "data": data}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def file_denied(name: str, query: Mapping[str, str]) -> str | None:
    """Why a signed (Seedance 2.0) URL is refused, or None; unsigned URLs always pass."""
    if "X-Tos-Expires" not in query:
        return None
    date, expires = query.get("X-Tos-Date", ""), query["X-Tos-Expires"]
    if not hmac.compare_digest(
        query.get("X-Tos-Signature", ""), _tos_signature(name, date, expires)
    ):
        return "SignatureDoesNotMatch"
    signed_at = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    return "AccessDenied: Request has expired" if time.time() > signed_at + int(expires) else None


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def file_chunks(name: str, size: int, chunk: int = 65536) -> Iterator[bytes]:
    """The deterministic bytes of file ``name``: a format signature, then seeded noise."""
    head = _MAGIC.get(name.rsplit(".", 1)[-1].lower(), b"")[:size]
    rng, left = random.Random(f"file:{name}"), size - len(head)
    yield head
    while left > 0:
        n = min(left, chunk)
        yield rng.randbytes(n)
        left -= n


def file_content(name: str, size: int) -> bytes:
    """What ``GET /files/{name}`` serves at ``file_bytes=size`` (for tests of archives)."""
    return b"".join(file_chunks(name, size))
