"""The AceData family: SeeDream images, SeeDance videos, Dreamina digital-human videos.

All three share a token (``ACEDATA_API_TOKEN``), a tasks endpoint
(``POST {ACEDATA_BASE_URL}/{provider}/tasks``, answering ``retrieve_batch``
with ``{"items": [...]}``) and the callback body ``{success, task_id,
trace_id, data}``, or ``{success: false, error: {code, message}}`` on failure.
They differ in what ``data`` holds.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from server.core.ids import task_key
from server.core.types import ErrorInfo, Observation, Result, Status
from server.errors import UpstreamError, worst
from server.providers import fields
from server.providers.base import Answer, Client, Fetch, Poll, Provider
from server.providers.creation import Creation
from server.providers.upstream import (
    HTTPClient,
    NotImplementedAction,
    compact,
    distinct_by_key,
    gather_bounded,
    per_asked,
)

if TYPE_CHECKING:
    from server.settings import Settings

logger = logging.getLogger(__name__)

#: Single ``retrieve`` calls in flight when AceData has no ``retrieve_batch``.
FALLBACK_CONCURRENCY = 4


# -- the tasks endpoint ------------------------------------------------------------------


class AceDataClient(HTTPClient):
    """``POST {base}/{provider}/tasks`` for SeeDream, SeeDance and Dreamina."""

    def __init__(self, provider: str, base_url: str, token: str, http: httpx.AsyncClient) -> None:
        super().__init__(provider, token, http)
        self.url = f"{base_url.rstrip('/')}/{provider}/tasks"
        self._path = httpx.URL(self.url).path
        #: False once upstream said ``api_not_implemented`` to retrieve_batch.
        self.batch_supported = True

    async def fetch(self, ids: Sequence[str]) -> Fetch:
        """One ``retrieve_batch`` call (single calls if upstream has no batch), as one call."""
        try:
            answers = await self.retrieve_batch(ids)
        except UpstreamError as exc:
            return Fetch({}, (exc.kind,), exc)
        outcome = "ok" if any(a is not None for a in answers.values()) else "not_yet"
        return Fetch(answers, (outcome,))

    async def retrieve_batch(self, ids: Sequence[str]) -> dict[str, Answer | None]:
        """One entry per distinct id asked: its Answer, or None when upstream has none yet."""
        firsts = distinct_by_key(ids)
        if not firsts:
            return {}
        by_key: dict[str, Answer] | None = None
        if self.batch_supported:
            try:
                by_key = await self._batch(firsts)
            except NotImplementedAction:
                # Remembered: asking again each pass would only cost a call and a log line.
                logger.info(
                    "retrieve_batch is not implemented; using retrieve provider=%s", self.provider
                )
                self.batch_supported = False
        if by_key is None:
            by_key = await self._singles(firsts)
        return per_asked(ids, by_key)

    async def retrieve(self, task_id: str) -> Answer | None:
        """``retrieve`` one task; ``{}`` (no such task or no result yet) is None."""
        what = f"POST {self._path} (retrieve)"
        response = await self._send("POST", self.url, what, {"action": "retrieve", "id": task_id})
        self._raise_for_status(response, what)
        payload = self._payload(response, what)
        if not isinstance(payload, dict):
            raise self._bad_shape(response, what, "a JSON object")
        if not payload:
            return None
        return Answer(task_id=task_id, body=response.content, payload=payload)

    async def _batch(self, firsts: dict[str, str]) -> dict[str, Answer]:
        what = f"POST {self._path} (retrieve_batch)"
        body = {"action": "retrieve_batch", "ids": list(firsts.values())}
        response = await self._send("POST", self.url, what, body)
        self._raise_for_status(response, what)
        payload = self._payload(response, what)
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise self._bad_shape(response, what, 'an object with an "items" list')
        found: dict[str, Answer] = {}
        for item in items:
            if not isinstance(item, dict) or not item:
                continue  # "not yet" placeholders and junk say nothing about any task
            key = _asked_key(item, firsts)
            if key is None or key in found:
                logger.debug(
                    "ignoring an unmatched or repeated batch item provider=%s", self.provider
                )
                continue
            found[key] = Answer(task_id=firsts[key], body=compact(item), payload=item)
        return found

    async def _singles(self, firsts: dict[str, str]) -> dict[str, Answer]:
        """The batch done with single calls; the worst error met is the batch's error."""
        results = await gather_bounded(firsts, self.retrieve, FALLBACK_CONCURRENCY)
        errors = [r for r in results.values() if isinstance(r, UpstreamError)]
        if errors:
            raise worst(errors)
        return {key: a for key, a in results.items() if isinstance(a, Answer)}


def _asked_key(item: dict[str, Any], firsts: Mapping[str, str]) -> str | None:
    """The key of the asked task ``item`` answers: the first of its ids that was asked.

    Its ids, in order: the wrapper's id, then the ids inside its response (Dreamina's
    ``data.task_id`` may lack dashes). Read one at a time: the first one matches
    in every answer we have seen, so the others are not even looked up.
    """
    response = item.get("response")
    inner = response if isinstance(response, dict) else item
    for candidate in (item.get("id"), item.get("task_id"), inner.get("task_id")):
        if isinstance(candidate, str) and (key := task_key(candidate)) in firsts:
            return key
    data = inner.get("data")
    candidate = data.get("task_id") if isinstance(data, dict) else None
    if isinstance(candidate, str) and (key := task_key(candidate)) in firsts:
        return key
    return None


# -- the providers -----------------------------------------------------------------------


@dataclass(frozen=True)
class DataReading:
    """What a body's ``data`` says, before ``success`` and the wrapper are weighed."""

    word: str | None = None  # the status word as sent
    status: Status | None = None  # None: no word, an unknown word, or success without a file
    results: tuple[Result, ...] = ()
    error: ErrorInfo | None = None
    upstream: dict[str, Any] = field(default_factory=dict)


class AceDataProvider(Provider):
    """What the three AceData providers share: token, endpoint, wrapper and failure rules.

    A status word decides first: in ``data``, else the wrapper's ``state``. Without
    one, ``success: false`` is a final failure when it carries an error code, or
    when the wrapper (or the body) says the task finished (``finished_at``);
    otherwise it is a transient hiccup. A body with no ``success`` key but an
    ``error`` object with a code (and no ``data``) is that failure too.
    """

    family = "acedata"
    token_settings = ("ACEDATA_API_TOKEN",)
    poll: Poll = "batch"
    #: Where tasks are created, under ACEDATA_BASE_URL (docs/submit-upstream.md).
    creation_path: str

    def client(self, settings: Settings, http: httpx.AsyncClient) -> Client | None:
        if not settings.acedata_api_token:
            return None
        return AceDataClient(self.name, settings.acedata_base_url, settings.acedata_api_token, http)

    def creation(
        self, settings: Settings, request: Mapping[str, Any], callback_url: str
    ) -> Creation | None:
        """``POST {base}{creation_path}`` with taskhook's ``callback_url`` and ``async: true``."""
        if not settings.acedata_api_token:
            return None
        url = f"{settings.acedata_base_url.rstrip('/')}{self.creation_path}"
        body = {**request, "callback_url": callback_url, "async": True}
        return Creation(self.name, url, settings.acedata_api_token, "ACEDATA_API_TOKEN", body)

    def body_task_id(self, body: Mapping[str, Any]) -> str | None:
        """Where a bare body names its task (the wrapper's ``id`` wins over it)."""
        return fields.task_id(body.get("task_id"))

    @abc.abstractmethod
    def read_data(self, body: Mapping[str, Any]) -> DataReading:
        """What ``body["data"]`` says."""

    def parse_body(self, body: Mapping[str, Any], wrapper: Mapping[str, Any]) -> Observation:
        task_id = self.body_task_id(body)
        trace_id = fields.text(body.get("trace_id"))
        read = self.read_data(body)
        word, status, error = read.word, read.status, read.error
        if word is None and (state := fields.text(wrapper.get("state"))) is not None:
            word, status = state, self.status(state)
            if status is Status.FAILED:
                error = ErrorInfo(None, f"upstream reported state {state!r} without a reason")
            elif status is Status.SUCCEEDED and not read.results:
                status = None  # success without a result says nothing yet
        if status is None:
            failure = self._failure(body, wrapper)
            if failure is not None:
                status, error = Status.FAILED, failure
        transient = status is None and body.get("success") is False
        return Observation(
            self.name,
            task_id,
            status,
            upstream_status=word,
            trace_id=trace_id,
            results=read.results if status is Status.SUCCEEDED else (),
            error=error if status is Status.FAILED else None,
            transient=transient,
            upstream=read.upstream,
        )

    def _failure(self, body: Mapping[str, Any], wrapper: Mapping[str, Any]) -> ErrorInfo | None:
        """The final failure a body with no status word reports, if it reports one."""
        code, message = fields.error_info(body.get("error"))
        if body.get("success") is False:
            if code is not None:
                return ErrorInfo(code, message or code)
            if _finished(body) or _finished(wrapper):
                # finished_at is set only once the task is over: no answer will bring a file.
                return ErrorInfo(
                    None, message or "upstream reported success: false after the task finished"
                )
            return None  # a hiccup; AceData's own SDK retries these too
        if "success" not in body and code is not None and not body.get("data"):
            return ErrorInfo(code, message or code)  # an error body standing for the task
        return None


def _finished(source: Mapping[str, Any]) -> bool:
    return source.get("finished_at") not in (None, "", 0)


class SeeDream(AceDataProvider):
    """Images: ``data`` is a list of ``{prompt, size, image_url}``; no status word."""

    name = "seedream"
    result_kind = "image"
    creation_path = "/seedream/images"

    def read_data(self, body: Mapping[str, Any]) -> DataReading:
        data = body.get("data")
        items = [data] if isinstance(data, Mapping) else data if isinstance(data, list) else []
        results = tuple(
            Result(url, "image", fields.scalars(item, skip=frozenset({"image_url"})))
            for item in items
            if isinstance(item, Mapping) and (url := fields.text(item.get("image_url"))) is not None
        )
        # SeeDream carries no status word, so upstream_status stays None rather
        # than one we made up; success is told by the images themselves.
        return DataReading(status=Status.SUCCEEDED if results else None, results=results)


class AceDataVideo(AceDataProvider):
    """Videos: ``data`` is ``{task_id, status, video_url, ...}``, upstream's raw object
    ``{id, status, content: {video_url}, ...}``, or a list of such objects."""

    result_kind = "video"
    #: Dreamina puts our task id (maybe without dashes) in ``data.task_id``;
    #: SeeDance puts the upstream model's id there (``cgt-...``), never ours.
    id_in_data = False
    #: Fields of ``data`` that are the caller's inputs, not results.
    input_keys: frozenset[str] = frozenset()

    def body_task_id(self, body: Mapping[str, Any]) -> str | None:
        found = fields.task_id(body.get("task_id"))
        if found is None and self.id_in_data:
            found = fields.task_id(fields.mapping(body.get("data")).get("task_id"))
        return found

    def read_data(self, body: Mapping[str, Any]) -> DataReading:
        data = body.get("data")
        objects: list[Mapping[str, Any]] = (
            [data]
            if isinstance(data, Mapping)
            else [x for x in data if isinstance(x, Mapping)]
            if isinstance(data, list)
            else []
        )
        word = next((w for o in objects if (w := _word(o)) is not None), None)
        status = self.status(word)
        skip = _NOT_EXTRA | self.input_keys
        results = tuple(
            Result(url, "video", fields.scalars(o, skip=skip))
            for o in objects
            if (url := _video_url(o)) is not None
        )
        if word is None and results:
            status = Status.SUCCEEDED  # no status word at all, but the video is proof enough
        if status is Status.SUCCEEDED and not results:
            status = None  # success without a result says nothing yet
        first = objects[0] if objects else {}
        upstream = fields.scalars(first, only=("model",))
        if not self.id_in_data:
            upstream_id = fields.text(first.get("task_id")) or fields.text(first.get("id"))
            if upstream_id is not None:
                upstream["upstream_task_id"] = upstream_id
        error = None
        if status is Status.FAILED:
            failed = next((o for o in objects if self.status(_word(o)) is Status.FAILED), first)
            code, message = fields.error_info(failed.get("error") or body.get("error"))
            message = (
                message
                or fields.text(failed.get("fail_reason"))
                or fields.text(failed.get("message"))
            )
            error = ErrorInfo(
                code, message or f"upstream reported status {word!r} without a reason"
            )
        return DataReading(word, status, results, error, upstream)


#: Fields of a video object read into their own places, not into a result's extras.
_NOT_EXTRA = frozenset({"task_id", "id", "status", "state", "video_url", "content"})


def _word(obj: Mapping[str, Any]) -> str | None:
    return fields.text(obj.get("status")) or fields.text(obj.get("state"))


def _video_url(obj: Mapping[str, Any]) -> str | None:
    return fields.text(obj.get("video_url")) or fields.text(
        fields.mapping(obj.get("content")).get("video_url")
    )


class SeeDance(AceDataVideo):
    name = "seedance"
    creation_path = "/seedance/videos"


class Dreamina(AceDataVideo):
    name = "dreamina"
    creation_path = "/dreamina/videos"
    id_in_data = True
    # The portrait and voice the caller sent: inputs, already in the raw delivery.
    input_keys = frozenset({"image_url", "audio_url"})


SEEDREAM = SeeDream()
SEEDANCE = SeeDance()
DREAMINA = Dreamina()
