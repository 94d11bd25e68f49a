"""Merging every payload shape the providers send (issue 12): any order of any subset converges.

For one task per provider, every shape of ``tests/fixtures/shapes`` is written
out as a view of one truth (the same video or image, the same failure code):
bare bodies, wrappers with ``state`` and ``finished_at``, ``data`` as an object
or a list, the result under ``content.video_url``, the legacy ``fail_reason``
URL, "not yet" placeholders. Whatever subset arrives, in whatever order, the
merged task ends the same, and it is the truth as far as the subset told it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.merge import merge, url_key
from server.core.types import Observation, Status, TaskState
from server.providers.parse import parse_payload

SEEDANCE = "9462ca25-468b-45a5-9e75-6f516dedcc80"
DREAMINA = "362b4fed-67bd-11f1-ad11-00163e57d510"
SEEDREAM = "84d1544a-9043-4dde-a98b-e889dacd75f6"
SEEDANCE2 = "asyntask_h81efT0qwtLnzyt6VENmCZ6VXSfNxE2E"
VIDEO = "https://platform.cdn.acedata.cloud/seedance/d1c2e49e.mp4"
IMAGE = "https://platform.cdn.acedata.cloud/seedream/6e5f9085.jpg"
INPUTS = {"image_url": "https://cdn.acedata.cloud/face.jpg", "audio_url": "https://x.test/a.wav"}
CODE = "OutputVideoSensitiveContentDetected"


def wrapper(task_id: str, response: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": task_id, "created_at": 1766329436.091, **extra}
    if response is not None:
        body["response"] = response
    return body


def raw_video(status: str, **extra: Any) -> dict[str, Any]:
    """SeeDance's ``data`` as upstream's raw object: its ``id`` is the model's, not ours."""
    return {"id": "cgt-20251221230356-sxgt7", "status": status, **extra}


def seedance_shapes() -> dict[str, list[Any]]:
    ok = {"success": True, "task_id": SEEDANCE}
    content = {"content": {"video_url": VIDEO}}
    return {
        "not_yet": [
            {},
            wrapper(SEEDANCE),
            wrapper(SEEDANCE, state=""),
            wrapper(SEEDANCE, {"data": []}, state=""),
            {**ok, "data": {"task_id": "cgt-1", "status": "succeeded", "video_url": None}},
            {"success": False, "task_id": SEEDANCE, "error": "temporary"},
            {**ok, "data": {"task_id": "cgt-1", "status": "mystery_word"}},
        ],
        "progress": [
            {**ok, "data": {"task_id": "cgt-1", "status": "queued"}},
            {**ok, "data": [raw_video("processing")]},
            wrapper(SEEDANCE, {"data": []}, state="processing"),
            wrapper(SEEDANCE, {**ok, "data": {"status": "processing"}}, finished_at=1.0),
        ],
        "succeeded": [
            {**ok, "data": {"task_id": "cgt-1", "status": "succeeded", "video_url": VIDEO}},
            {**ok, "data": raw_video("succeeded", **content)},
            {**ok, "data": [raw_video("succeeded", **content)]},
            {**ok, "data": [{"id": "video-id-1", "state": "succeeded", "video_url": VIDEO}]},
            {**ok, "data": {"task_id": "cgt-1", "status": "succeed", "video_url": VIDEO}},
            wrapper(SEEDANCE, {"data": {"status": "succeeded", "video_url": VIDEO}}),
            wrapper(
                SEEDANCE,
                {"success": False, "data": {"status": "succeeded", "video_url": VIDEO + "?s=2"}},
                finished_at=1766329518.051,
            ),
        ],
        "failed": [
            {**ok, "data": [raw_video("failed", error={"code": CODE, "message": "sensitive"})]},
            {**ok, "data": {"task_id": "cgt-1", "status": "rejected"}},
            wrapper(SEEDANCE, {"data": []}, state="failed"),
            wrapper(SEEDANCE, {"error": {"code": CODE, "message": "sensitive"}}),
            wrapper(SEEDANCE, {"success": False, "error": {"message": "x"}}, finished_at=2.0),
            {"success": False, "task_id": SEEDANCE, "error": {"code": CODE, "message": "m"}},
        ],
    }


def dreamina_shapes() -> dict[str, list[Any]]:
    dashless = DREAMINA.replace("-", "")
    return {
        "not_yet": [
            wrapper(DREAMINA),
            {"success": True, "task_id": DREAMINA, "data": {"status": "done", **INPUTS}},
        ],
        "progress": [
            {
                "success": True,
                "task_id": DREAMINA,
                "data": {"task_id": dashless, "status": "running"},
            }
        ],
        "succeeded": [
            {
                "success": True,
                "task_id": DREAMINA,
                "data": {"task_id": dashless, "status": "done", "video_url": VIDEO, **INPUTS},
            },
            wrapper(
                DREAMINA,
                {
                    "success": True,
                    "data": {"task_id": dashless, "status": "done", "video_url": VIDEO},
                },
                started_at=1.0,
                finished_at=2.0,
                elapsed=1.0,
            ),
        ],
        "failed": [
            wrapper(DREAMINA, {"success": False, "error": {"message": "no"}}, finished_at=2.0),
            {"success": False, "task_id": DREAMINA, "error": {"code": CODE, "message": "m"}},
        ],
    }


def seedream_shapes() -> dict[str, list[Any]]:
    ok = {"success": True, "task_id": SEEDREAM}
    return {
        "not_yet": [wrapper(SEEDREAM), wrapper(SEEDREAM, {"success": True, "data": None})],
        "progress": [],
        "succeeded": [
            {**ok, "data": [{"prompt": "a cat", "size": "2048x2048", "image_url": IMAGE}]},
            wrapper(SEEDREAM, {**ok, "data": [{"image_url": IMAGE}]}, finished_at=2.0),
            wrapper(
                SEEDREAM,
                {**ok, "data": [{"image_url": IMAGE}]},
                request={"image": ["https://x.test/reference.png"]},
            ),
        ],
        "failed": [
            wrapper(SEEDREAM, {"success": False, "error": {"message": "no"}}, finished_at=2.0),
            wrapper(SEEDREAM, {"error": {"code": CODE, "message": "m"}}),
        ],
    }


def gateway(status: str, **data: Any) -> dict[str, Any]:
    base = {"id": 48213, "task_id": SEEDANCE2, "status": status, "progress": "10%"}
    return {"code": "success", "message": "", "data": {**base, **data}}


def seedance2_shapes() -> dict[str, list[Any]]:
    raw_ok = {"id": "cgt-20260427191505-9j2q7", "status": "succeeded"}
    return {
        "not_yet": [
            {"code": "success", "message": "", "data": {"task_id": SEEDANCE2}},
            gateway("UNKNOWN"),
            gateway("SUCCESS"),  # success without a URL says nothing yet
        ],
        "progress": [gateway("NOT_START"), gateway("SUBMITTED"), gateway("IN_PROGRESS")],
        "succeeded": [
            gateway("SUCCESS", result_url=VIDEO + "?X-Tos-Signature=a"),
            gateway("SUCCESS", result_url=VIDEO + "?X-Tos-Signature=b", data=raw_ok),
            gateway("SUCCESS", data={**raw_ok, "content": {"video_url": VIDEO + "?sig=c"}}),
            gateway("SUCCESS", fail_reason=VIDEO + "?X-Tos-Signature=d"),
        ],
        "failed": [
            gateway("FAILURE", fail_reason=f"task failed, code: {CODE}, message: sensitive"),
            gateway(
                "FAILURE",
                fail_reason="task failed",
                data={"status": "failed", "error": {"code": CODE, "message": "sensitive"}},
            ),
            gateway("FAILURE", fail_reason="x", result_url="x"),
        ],
    }


SHAPES = {
    "seedance": (SEEDANCE, seedance_shapes(), "video", VIDEO),
    "dreamina": (DREAMINA, dreamina_shapes(), "video", VIDEO),
    "seedream": (SEEDREAM, seedream_shapes(), "image", IMAGE),
    "seedance2": (SEEDANCE2, seedance2_shapes(), "video", VIDEO),
}
RANK = {"not_yet": Status.PENDING, "progress": None, "succeeded": Status.SUCCEEDED}


def observations(provider: str, kind: str) -> list[Observation]:
    task_id, shapes, _, _ = SHAPES[provider]
    return [parse_payload(provider, {"id": task_id} if p == {} else p) for p in shapes[kind]]


def fold(state: TaskState, observations: list[Observation]) -> TaskState:
    for obs in observations:
        state = merge(state, obs)
    return state


def converged(state: TaskState) -> tuple[Any, ...]:
    """What must not depend on which shapes came, or their order."""
    files = tuple((url_key(r.url), r.kind) for r in state.results)
    code = state.error.code if state.error else None
    return (state.status, files, code, state.conflicts)


@pytest.mark.parametrize("provider", list(SHAPES))
@pytest.mark.parametrize("kind", ["not_yet", "progress", "succeeded", "failed"])
def test_every_shape_reads_as_its_kind(provider: str, kind: str) -> None:
    task_id, _, result_kind, url = SHAPES[provider]
    for obs in observations(provider, kind):
        assert obs.task_id == task_id  # never the upstream model's id
        if kind == "not_yet":
            assert obs.is_empty, obs
        elif kind == "progress":
            assert obs.status in (Status.QUEUED, Status.RUNNING), obs
        elif kind == "succeeded":
            assert obs.status is Status.SUCCEEDED, obs
            # One file, the task's own: never an input (portrait, voice, reference image).
            assert [(url_key(r.url), r.kind) for r in obs.results] == [(url, result_kind)]
        else:
            assert obs.status is Status.FAILED and not obs.results, obs
            assert obs.error is not None and obs.error.code in (CODE, None)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, str, list[Observation]]:
    """A provider, the truth (succeeded or failed), and any subset of its shapes in any order."""
    provider = draw(st.sampled_from(list(SHAPES)))
    truth = draw(st.sampled_from(["succeeded", "failed"]))
    pool = [
        *observations(provider, "not_yet"),
        *observations(provider, "progress"),
        *observations(provider, truth),
    ]
    chosen = draw(st.lists(st.sampled_from(pool), max_size=8))
    return provider, truth, chosen


@settings(max_examples=300)
@given(case=deliveries(), data=st.data())
def test_any_order_of_any_subset_of_shapes_converges(
    case: tuple[str, str, list[Observation]], data: st.DataObject
) -> None:
    provider, truth, chosen = case
    task_id, _, result_kind, url = SHAPES[provider]
    start = TaskState(task_id, provider)
    first = fold(start, chosen)
    again = fold(start, data.draw(st.permutations(chosen)))
    assert converged(again) == converged(first)
    assert first.conflicts == ()
    finals = [o for o in chosen if o.status is not None and o.status.is_final]
    if not finals:
        assert not first.is_final
        assert first.status.rank == max((o.status.rank for o in chosen if o.status), default=0)
    elif truth == "succeeded":
        assert first.status is Status.SUCCEEDED
        assert [(url_key(r.url), r.kind) for r in first.results] == [(url, result_kind)]
    else:
        assert first.status is Status.FAILED and first.results == ()
        codes = {o.error.code for o in finals if o.error and o.error.code}
        assert (first.error.code if first.error else None) == (CODE if codes else None)
