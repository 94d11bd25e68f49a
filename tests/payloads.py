"""Small payload builders in the seeds' shapes, for route and end-to-end tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

#: A creation call's request per provider, as the upstream documents show it.
CREATION_REQUESTS: dict[str, dict[str, Any]] = {
    "seedream": {"model": "doubao-seedream-4-0-250828", "prompt": "a white siamese cat"},
    "seedance": {
        "model": "doubao-seedance-1-0-pro-250528",
        "content": [{"type": "text", "text": "a kitten yawning"}],
    },
    "dreamina": {
        "image_url": "https://cdn.example/p.jpg",
        "audio_url": "https://cdn.example/v.wav",
    },
    "seedance2": {"model": "doubao-seedance-2-0-260128", "prompt": "a kitten yawning"},
}


def dumps(value) -> bytes:
    return json.dumps(value).encode()


def seedance(task_id: str | None = None, status: str = "succeeded", video: bool = True) -> dict:
    task_id = task_id or str(uuid.uuid4())
    return {
        "success": True,
        "task_id": task_id,
        "trace_id": str(uuid.uuid4()),
        "data": {
            "task_id": "cgt-20251221230356-sxgt7",
            "status": status,
            "video_url": f"https://cdn.example/seedance/{task_id}.mp4" if video else None,
            "last_frame_url": None,
            "model": "doubao-seedance-1-0-pro-250528",
        },
    }


def seedream(task_id: str | None = None) -> dict:
    task_id = task_id or str(uuid.uuid4())
    return {
        "success": True,
        "task_id": task_id,
        "trace_id": str(uuid.uuid4()),
        "data": [
            {
                "prompt": "a white siamese cat",
                "size": "2048x2048",
                "image_url": f"https://cdn.example/seedream/{task_id}.jpg",
            }
        ],
    }


def dreamina(task_id: str | None = None) -> dict:
    task_id = task_id or str(uuid.uuid4())
    return {
        "success": True,
        "data": {
            "task_id": task_id.replace("-", ""),
            "status": "done",
            "video_url": f"https://cdn.example/dreamina/{task_id}.mp4",
        },
    }


def seedance2(task_id: str | None = None, status: str = "SUCCESS") -> dict:
    task_id = task_id or "asyntask_" + uuid.uuid4().hex
    data = {
        "task_id": task_id,
        "action": "generate",
        "status": status,
        "progress": "50%",
        "submit_time": 1777288506,
        "start_time": 1777288508,
        "finish_time": 0,
    }
    if status == "SUCCESS":
        url = f"https://tos.example/{task_id}.mp4?X-Tos-Expires=86400"
        data.update(result_url=url, fail_reason=url, progress="100%", finish_time=1777288800)
    if status == "FAILURE":
        data.update(fail_reason="task failed, code: InvalidParameter", progress="100%")
    return {"code": "success", "message": "", "data": data}


def failure(task_id: str, code: str = "api_error") -> dict:
    return {
        "success": False,
        "task_id": task_id,
        "error": {"code": code, "message": "generation failed"},
        "trace_id": "t",
    }


BUILDERS = {
    "seedance": seedance,
    "seedream": seedream,
    "dreamina": dreamina,
    "seedance2": seedance2,
}
