"""Parsing every provider's payload shapes into one Observation."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.ids import same_task
from server.core.types import ErrorInfo, Observation, Status
from server.errors import NoTaskId, NotJSON, ParseError
from server.providers import NAMES as PROVIDERS
from server.providers import get
from server.providers.fields import MAX_TASK_ID_LENGTH
from server.providers.parse import decode, parse_body, parse_payload

from .fixtures import load, raw

SEEDANCE_ID = "9462ca25-468b-45a5-9e75-6f516dedcc80"
SEEDREAM_ID = "84d1544a-9043-4dde-a98b-e889dacd75f6"
DREAMINA_ID = "362b4fed-67bd-11f1-ad11-00163e57d510"
SEEDANCE2_ID = "asyntask_h81efT0qwtLnzyt6VENmCZ6VXSfNxE2E"


# -- SeeDream --------------------------------------------------------------------


def test_seedream_callback_succeeds_with_one_image_per_item() -> None:
    obs = parse_payload("seedream", load("seedream_callback"))
    assert obs.task_id == SEEDREAM_ID
    assert obs.status is Status.SUCCEEDED
    assert obs.trace_id == "176acf03-7ca7-4fc6-85db-e3724d4f59eb"
    assert obs.upstream_status is None  # SeeDream sends no status word
    [image] = obs.results
    assert image.kind == "image"
    assert image.url.endswith("6e5f9085-cc4a-4801-b77b-31550129ff19.jpg")
    assert image.extra == {"prompt": "a white siamese cat", "size": "2048x2048"}


def test_seedream_batch_items_parse_with_the_wrapper_id() -> None:
    items = load("seedream_batch")["items"]
    observations = [parse_payload("seedream", item) for item in items]
    assert [o.task_id for o in observations] == [SEEDREAM_ID, SEEDREAM_ID]
    assert all(o.status is Status.SUCCEEDED for o in observations)
    assert observations[0].upstream == {"created_at": 1766427547.107}


def test_seedream_several_images_give_several_results_in_order() -> None:
    body = load("seedream_callback")
    body["data"] = [
        {"image_url": "https://x/1.jpg", "size": "1x1"},
        {"image_url": 7},  # odd-typed: skipped
        "not an object",
        {"image_url": "https://x/2.jpg", "nested": {"skipped": True}},
    ]
    obs = parse_payload("seedream", body)
    assert [r.url for r in obs.results] == ["https://x/1.jpg", "https://x/2.jpg"]
    assert obs.results[1].extra == {}


def test_seedream_success_with_empty_data_is_an_empty_observation() -> None:
    obs = parse_payload("seedream", load("seedream_empty_data"))
    assert obs.is_empty and obs.task_id == SEEDREAM_ID and not obs.transient


# -- SeeDance ----------------------------------------------------------------------


def test_seedance_wrapper_uses_acedata_id_never_the_upstream_model_id() -> None:
    obs = parse_payload("seedance", load("seedance_retrieve"))
    assert obs.task_id == SEEDANCE_ID
    assert obs.status is Status.SUCCEEDED
    assert obs.upstream_status == "succeeded"
    [video] = obs.results
    assert video.kind == "video"
    assert video.url.endswith("d1c2e49e-d854-4a2e-b0c0-88e520f82e2e.mp4")
    assert video.extra == {
        "model": "doubao-seedance-1-0-pro-250528"
    }  # null last_frame_url left out
    assert obs.upstream["upstream_task_id"] == "cgt-20251221230356-sxgt7"
    assert obs.upstream["created_at"] == 1766329436.091


def test_seedance_batch_items_keep_their_own_ids() -> None:
    batch = load("seedance_batch")
    observations = [parse_payload("seedance", item) for item in batch["items"]]
    assert [o.task_id for o in observations] == [item["id"] for item in batch["items"]]
    assert not any(o.task_id.startswith("cgt-") for o in observations)


def test_seedance_bare_callback_is_read_like_the_wrapped_one() -> None:
    wrapped = parse_payload("seedance", load("seedance_retrieve"))
    bare = parse_payload("seedance", load("seedance_retrieve")["response"])
    assert (bare.task_id, bare.status, bare.results) == (
        wrapped.task_id,
        wrapped.status,
        wrapped.results,
    )


def test_seedance_last_frame_url_goes_into_extra_when_present() -> None:
    obs = parse_payload("seedance", load("seedance_succeeded_last_frame"))
    assert obs.results[0].extra["last_frame_url"].endswith("last-frame.png")


@pytest.mark.parametrize(
    ("fixture", "status"),
    [("seedance_queued", Status.QUEUED), ("seedance_running", Status.RUNNING)],
)
def test_seedance_intermediate_statuses(fixture: str, status: Status) -> None:
    obs = parse_payload("seedance", load(fixture))
    assert obs.status is status and obs.results == () and obs.error is None


def test_seedance_failed_status_carries_the_upstream_error() -> None:
    obs = parse_payload("seedance", load("seedance_failed"))
    assert obs.status is Status.FAILED
    assert obs.error == ErrorInfo(
        "OutputVideoSensitiveContentDetected", "The output video may contain sensitive content."
    )


def test_seedance_succeeded_without_video_is_empty() -> None:
    obs = parse_payload("seedance", load("seedance_succeeded_no_video"))
    assert obs.is_empty and obs.upstream_status == "succeeded"


def test_seedance_data_task_id_alone_is_not_a_task_id() -> None:
    body = load("seedance_retrieve")["response"]
    del body["task_id"]
    with pytest.raises(NoTaskId):
        parse_payload("seedance", body)


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("PENDING", Status.QUEUED),
        ("Queued", Status.QUEUED),
        ("processing", Status.RUNNING),
        ("in-progress", Status.RUNNING),
        ("IN_PROGRESS", Status.RUNNING),
        ("SUCCESS", Status.SUCCEEDED),
        ("done", Status.SUCCEEDED),
        (" succeeded ", Status.SUCCEEDED),
        ("error", Status.FAILED),
        ("expired", Status.FAILED),  # upstream gave up: a failure it reports
        ("cancelled", Status.FAILED),
        ("something-new", None),
    ],
)
def test_status_words_are_read_leniently(word: str, status: Status | None) -> None:
    body = {"task_id": SEEDANCE_ID, "data": {"status": word, "video_url": "https://x/v.mp4"}}
    obs = parse_payload("seedance", body)
    assert obs.status is status
    assert obs.upstream_status == word


def test_failed_status_without_reason_still_explains_itself() -> None:
    obs = parse_payload("seedance", {"task_id": SEEDANCE_ID, "data": {"status": "failed"}})
    assert obs.error is not None and obs.error.code is None and "failed" in obs.error.message


def test_video_url_without_any_status_word_is_a_success() -> None:
    obs = parse_payload("seedance", {"task_id": SEEDANCE_ID, "data": {"video_url": "https://x/v"}})
    assert obs.status is Status.SUCCEEDED and obs.upstream_status is None


def test_odd_typed_fields_are_skipped_not_rejected() -> None:
    body = {
        "task_id": SEEDANCE_ID,
        "trace_id": 12,
        "data": {"status": "succeeded", "video_url": ["https://x"], "model": {"a": 1}},
    }
    obs = parse_payload("seedance", body)
    assert obs.is_empty and obs.trace_id is None and obs.upstream == {}
    assert parse_payload("seedance", {"task_id": SEEDANCE_ID, "data": [1, 2]}).is_empty


# -- Dreamina ------------------------------------------------------------------------


def test_dreamina_retrieve_succeeds_and_leaves_the_inputs_out() -> None:
    obs = parse_payload("dreamina", load("dreamina_retrieve"))
    assert obs.task_id == DREAMINA_ID
    assert obs.status is Status.SUCCEEDED and obs.upstream_status == "done"
    [video] = obs.results
    assert video.url == "https://cdn.acedata.cloud/634d760216.mp4"
    assert "image_url" not in video.extra and "audio_url" not in video.extra


def test_dreamina_callback_without_top_level_id_uses_data_task_id() -> None:
    obs = parse_payload("dreamina", load("dreamina_callback_nodash"))
    assert obs.task_id == "362b4fed67bd11f1ad1100163e57d510"  # kept as given
    assert same_task(obs.task_id, DREAMINA_ID)
    assert obs.status is Status.SUCCEEDED


def test_dreamina_non_done_status_is_not_final() -> None:
    obs = parse_payload("dreamina", load("dreamina_running"))
    assert obs.status is Status.RUNNING and obs.upstream_status == "processing"


def test_dreamina_done_without_video_is_empty() -> None:
    body = {"task_id": DREAMINA_ID, "data": {"status": "done"}}
    assert parse_payload("dreamina", body).is_empty


# -- Seedance 2.0 ------------------------------------------------------------------------


def test_seedance2_success() -> None:
    body = load("seedance2_success")
    obs = parse_payload("seedance2", body)
    assert obs.task_id == SEEDANCE2_ID
    assert obs.status is Status.SUCCEEDED and obs.upstream_status == "SUCCESS"
    assert obs.error is None  # fail_reason is a legacy copy of result_url on success
    assert obs.trace_id is None  # request_id is not a trace id
    [video] = obs.results
    assert video.url == body["data"]["result_url"]
    assert video.extra["duration"] == 5 and video.extra["resolution"] == "720p"
    assert "content" not in video.extra and "usage" not in video.extra
    assert obs.upstream["request_id"] == "20260427111505260254000NBdvZFoP"
    assert obs.upstream["finish_time"] == 1777288800 and obs.upstream["progress"] == "100%"


def test_seedance2_super_resolution_keeps_the_original_url_as_extra() -> None:
    body = load("seedance2_super_resolution")
    [video] = parse_payload("seedance2", body).results
    assert video.url == body["data"]["result_url"]
    assert video.extra["original_result_url"] == body["data"]["original_result_url"]
    assert video.extra["super_resolution"] == "720p" and video.extra["resolution"] == "480p"


def test_seedance2_failure_parses_the_code_out_of_fail_reason() -> None:
    obs = parse_payload("seedance2", load("seedance2_failure"))
    assert obs.status is Status.FAILED and obs.results == ()
    assert obs.error == ErrorInfo(
        "InvalidParameter",
        "task failed, code: InvalidParameter, message: img_url must be set for image to video "
        "method",
    )


def test_seedance2_failure_without_code_in_reason() -> None:
    body = load("seedance2_failure")
    body["data"]["fail_reason"] = "upstream timeout"
    assert parse_payload("seedance2", body).error == ErrorInfo(None, "upstream timeout")


@pytest.mark.parametrize(
    ("fixture", "status", "progress"),
    [
        ("seedance2_not_start", Status.QUEUED, "0%"),
        ("seedance2_queued", Status.QUEUED, "0%"),
        ("seedance2_in_progress", Status.RUNNING, "50%"),
    ],
)
def test_seedance2_intermediate_statuses(fixture: str, status: Status, progress: str) -> None:
    obs = parse_payload("seedance2", load(fixture))
    assert obs.status is status and obs.upstream["progress"] == progress


def test_seedance2_success_without_result_url_falls_back_to_the_raw_output() -> None:
    body = load("seedance2_success")
    del body["data"]["result_url"]
    [video] = parse_payload("seedance2", body).results
    assert video.url == body["data"]["data"]["content"]["video_url"]
    del body["data"]["data"]["content"]
    [legacy] = parse_payload("seedance2", body).results  # old records keep it in fail_reason
    assert legacy.url == body["data"]["fail_reason"]
    body["data"]["fail_reason"] = "not a URL"
    assert parse_payload("seedance2", body).is_empty


# -- shapes shared by every AceData provider -----------------------------------------------


@pytest.mark.parametrize("provider", ["seedream", "seedance", "dreamina"])
def test_success_false_with_error_code_is_a_final_failure(provider: str) -> None:
    obs = parse_payload(provider, load("acedata_failure_with_code"))
    assert obs.status is Status.FAILED
    assert obs.error == ErrorInfo(
        "content_policy_violation", "The prompt was rejected by the safety filter."
    )


@pytest.mark.parametrize("provider", ["seedream", "seedance", "dreamina"])
def test_success_false_without_error_code_is_transient(provider: str) -> None:
    obs = parse_payload(provider, load("acedata_transient"))
    assert obs.is_empty and obs.transient and obs.task_id == SEEDANCE_ID


@pytest.mark.parametrize(
    ("provider", "fixture"),
    [("seedance", "acedata_error"), ("seedream", "acedata_error"), ("dreamina", "dreamina_error")],
)
def test_error_answers_without_an_id_name_no_task(provider: str, fixture: str) -> None:
    with pytest.raises(NoTaskId, match="error answer"):
        parse_payload(provider, load(fixture))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_empty_object_names_no_task(provider: str) -> None:
    with pytest.raises(NoTaskId) as caught:
        parse_body(provider, raw("empty"))
    assert caught.value.code == "no_task_id" and caught.value.provider == provider


@pytest.mark.parametrize("fixture", ["wrapper_empty_response", "wrapper_without_response"])
def test_wrapper_without_an_answer_is_empty_with_the_wrapper_id(fixture: str) -> None:
    obs = parse_payload("dreamina", load(fixture))
    assert obs.is_empty and obs.task_id == DREAMINA_ID
    assert obs.trace_id == "a9063166-26ed-4451-85b5-54e896817c69"


def test_wrapper_with_null_response_is_empty() -> None:
    obs = parse_payload("seedance", {"id": SEEDANCE_ID, "response": None})
    assert obs.is_empty and obs.task_id == SEEDANCE_ID


def test_wrapper_id_wins_over_the_response_task_id_and_lends_its_trace() -> None:
    payload = {
        "id": "wrapper-id",
        "trace_id": "wrapper-trace",
        "response": {"task_id": "body-id", "data": {"status": "running"}},
    }
    obs = parse_payload("seedance", payload)
    assert (obs.task_id, obs.trace_id, obs.status) == (
        "wrapper-id",
        "wrapper-trace",
        Status.RUNNING,
    )


def test_wrapper_without_id_falls_back_to_the_response_task_id() -> None:
    payload = {"id": None, "response": load("seedream_callback")}
    assert parse_payload("seedream", payload).task_id == SEEDREAM_ID
    with pytest.raises(NoTaskId):
        parse_payload("seedream", {"response": {}})


def test_retrieve_batch_answer_is_refused_with_a_hint() -> None:
    with pytest.raises(NoTaskId, match="retrieve_batch"):
        parse_payload("seedance", load("seedance_batch"))


@pytest.mark.parametrize(
    "bad_id", [None, "", "   ", 123, 1.5, True, ["x"], {"id": "x"}, "x" * (MAX_TASK_ID_LENGTH + 1)]
)
def test_unusable_task_ids_name_no_task(bad_id: Any) -> None:
    with pytest.raises(NoTaskId):
        parse_payload("seedance", {"task_id": bad_id, "data": {"status": "running"}})
    with pytest.raises(NoTaskId):
        parse_payload("seedance2", {"code": "success", "data": {"task_id": bad_id}})


def test_task_id_with_a_lone_surrogate_names_no_task() -> None:
    with pytest.raises(NoTaskId):
        parse_body("seedance", b'{"task_id": "ab\\ud800cd"}')


@pytest.mark.parametrize("payload", [[], [{"task_id": "x"}], "x", 1, None, True])
def test_non_object_payloads_name_no_task(payload: Any) -> None:
    with pytest.raises(NoTaskId, match="not an object"):
        parse_payload("seedance", payload)


def test_unknown_provider_is_a_value_error_not_a_parse_error() -> None:
    with pytest.raises(ValueError, match="unknown provider 'midjourney'") as caught:
        parse_payload("midjourney", {"task_id": "x"})
    assert not isinstance(caught.value, ParseError)


def test_every_provider_is_registered_under_its_own_name() -> None:
    assert PROVIDERS == ("seedream", "seedance", "dreamina", "seedance2")
    assert all(get(name).name == name for name in PROVIDERS)


# -- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"task_id=1", "not valid JSON"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b"[Infinity]", "Infinity"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": "\xc3"}', "not UTF-8"),
        (b"1" * 5000, "number too long"),
        (b"[" * 10_000 + b"]" * 10_000, "deeper"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "deeper"),
    ],
)
def test_undecodable_bodies_are_not_json(body: bytes, says: str) -> None:
    with pytest.raises(NotJSON, match=says) as caught:
        parse_body("seedance", body)
    assert caught.value.code == "not_json"


def test_decode_tolerates_a_utf8_byte_order_mark() -> None:
    assert decode(b"\xef\xbb\xbf" + raw("seedream_callback"))["task_id"] == SEEDREAM_ID


def test_deep_but_decodable_nesting_in_an_unread_field_is_fine() -> None:
    body = b'{"task_id": "t", "data": {"status": "running", "x": ' + b"[" * 200 + b"]" * 200 + b"}}"
    assert parse_body("seedance", body).status is Status.RUNNING


# -- never anything but ParseError, whatever arrives ----------------------------------------

KEYS = (
    "id",
    "task_id",
    "trace_id",
    "response",
    "request",
    "success",
    "error",
    "code",
    "message",
    "data",
    "status",
    "video_url",
    "image_url",
    "result_url",
    "original_result_url",
    "fail_reason",
    "last_frame_url",
    "model",
    "content",
    "progress",
    "created_at",
    "items",
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["done", "SUCCESS", "FAILURE", "running", "https://x/a.mp4?s=1", "t-1"])
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=30,
)

#: Objects that name a task and carry random fields, so the fuzzing reaches past the id.
OBJECTS_WITH_ID = st.builds(
    lambda fields, data, task_id: {**fields, "data": data, "task_id": task_id},
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=5),
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6) | JSON_VALUES,
    st.just("t-1") | JSON_VALUES,
)


def _is_json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int)


def _check_observation(provider: str, obs: Observation) -> None:
    """What every Observation that parse returns promises."""
    assert obs.provider == provider
    assert isinstance(obs.task_id, str) and obs.task_id.strip()
    assert len(obs.task_id) <= MAX_TASK_ID_LENGTH
    assert obs.status in (None, Status.QUEUED, Status.RUNNING, Status.SUCCEEDED, Status.FAILED)
    assert (obs.status is Status.SUCCEEDED) == bool(obs.results)
    assert (obs.status is Status.FAILED) == (obs.error is not None)
    if obs.error is not None:
        assert isinstance(obs.error.message, str) and obs.error.message
    assert not obs.transient or obs.is_empty
    kind = "image" if provider == "seedream" else "video"
    for result in obs.results:
        assert isinstance(result.url, str) and result.kind == kind
        assert all(_is_json_scalar(v) for v in result.extra.values())
    assert all(_is_json_scalar(v) for v in obs.upstream.values())
    for text in (obs.trace_id, obs.upstream_status):
        assert text is None or isinstance(text, str)
    json.dumps(obs.upstream, allow_nan=False)


def _parse_or_refuse(provider: str, parse: Any, arg: Any) -> None:
    try:
        obs = parse(provider, arg)
    except ParseError as exc:
        assert exc.code in ("not_json", "no_task_id") and exc.message
    else:
        _check_observation(provider, obs)


@settings(max_examples=300)
@given(provider=st.sampled_from(PROVIDERS), body=st.binary(max_size=200))
def test_random_bytes_parse_or_are_refused(provider: str, body: bytes) -> None:
    _parse_or_refuse(provider, parse_body, body)


@settings(max_examples=300)
@given(provider=st.sampled_from(PROVIDERS), payload=JSON_VALUES | OBJECTS_WITH_ID)
def test_random_json_parses_or_is_refused(provider: str, payload: Any) -> None:
    _parse_or_refuse(provider, parse_payload, payload)
    _parse_or_refuse(provider, parse_body, json.dumps(payload).encode())


FIXTURE_NAMES = (
    "seedream_callback",
    "seedream_batch",
    "seedance_retrieve",
    "seedance_failed",
    "dreamina_retrieve",
    "dreamina_callback_nodash",
    "seedance2_success",
    "seedance2_super_resolution",
    "seedance2_failure",
    "seedance2_in_progress",
    "acedata_failure_with_code",
    "acedata_transient",
)


def _mutate(value: Any, data: st.DataObject) -> Any:
    """``value`` with some fields replaced by random JSON, deleted, or left alone."""
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            action = data.draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
            if action == "replace":
                out[key] = data.draw(JSON_VALUES)
            elif action == "keep":
                out[key] = _mutate(child, data)
        return out
    if isinstance(value, list):
        return [_mutate(child, data) for child in value]
    return value


@settings(max_examples=300)
@given(provider=st.sampled_from(PROVIDERS), fixture=st.sampled_from(FIXTURE_NAMES), data=st.data())
def test_mutated_real_payloads_parse_or_are_refused(
    provider: str, fixture: str, data: st.DataObject
) -> None:
    payload = _mutate(load(fixture), data)
    if isinstance(payload, dict) and "items" in payload:
        for item in payload["items"] if isinstance(payload["items"], list) else []:
            _parse_or_refuse(provider, parse_payload, item)
    _parse_or_refuse(provider, parse_payload, payload)
