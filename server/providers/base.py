"""What a provider is: how its payloads read, how its tasks endpoint is asked.

A ``Provider`` is one upstream API taskhook receives callbacks from and polls:
its name (the ``{provider}`` of callback URLs), its family (the provider
module it lives in), the settings that hold its token, how it is polled
(``batch``: many ids per call; ``single``: one call per id) and what its
results are. ``parse`` turns one decoded payload into an ``Observation``;
``client`` builds the ``Client`` the reconciler asks, or None without a token.
``creation`` builds the call that creates a task upstream (``POST
/submit/{provider}``), which ``create`` makes once (``server.providers.creation``).

A ``Client`` answers ``fetch(ids)``: one entry per distinct id asked that got
an answer or a "not yet", the outcome of each upstream call it made, and the
worst error it met. It never raises for upstream trouble.

Adding a provider is one module with a ``Provider`` subclass and one line in
the registry (``server/providers/__init__.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

from server.core.types import Observation, Status
from server.errors import NoTaskId, UpstreamError
from server.providers import creation, fields
from server.providers.creation import Created, Creation

if TYPE_CHECKING:
    import httpx

    from server.settings import Settings

Poll = Literal["batch", "single"]
#: What a tasks-endpoint wrapper says about timing, kept in ``upstream`` as given.
WRAPPER_TIMES = ("created_at", "started_at", "finished_at", "elapsed")
ResultKind = Literal["image", "video"]


@dataclass(frozen=True)
class Answer:
    """One task's answer from a tasks endpoint."""

    task_id: str  # the id we asked for, spelled as we asked it
    body: bytes  # the raw JSON of this task's answer, kept as a delivery
    payload: Any  # ``body`` decoded


@dataclass(frozen=True)
class Fetch:
    """What one ``Client.fetch`` learned.

    ``answers`` has an entry (an ``Answer``, or None for "not yet") for every
    id asked whose call succeeded; ids whose call failed are absent. ``calls``
    holds one outcome label per upstream call made (``ok``, ``not_yet`` or the
    error's ``kind``); ``error`` is the worst error met, if any.
    """

    answers: Mapping[str, Answer | None]
    calls: tuple[str, ...]
    error: UpstreamError | None = None


class Client(Protocol):
    """A provider's tasks endpoint, as the reconciler sees it."""

    provider: str

    async def fetch(self, ids: Sequence[str]) -> Fetch:
        """Ask upstream about ``ids``; upstream trouble is returned in ``Fetch.error``."""
        ...


class Provider(abc.ABC):
    """One provider: its payloads, its tasks endpoint and its settings."""

    name: str
    family: str
    #: The settings (environment variable names) that must all be set to poll it.
    token_settings: tuple[str, ...]
    poll: Poll
    result_kind: ResultKind
    #: Where a bare body names its task, for the "names no task id" message.
    id_hint: str = "expected a string in task_id, or the task wrapper's id"
    #: The status words this provider uses, normalised (``fields.normalise_word``).
    status_words: Mapping[str, Status] = fields.STATUS_WORDS

    @abc.abstractmethod
    def parse_body(self, body: Mapping[str, Any], wrapper: Mapping[str, Any]) -> Observation:
        """What a bare body says; its ``task_id`` may be None (``parse`` resolves it).

        ``wrapper`` is the tasks-endpoint wrapper the body came in (empty for a
        bare body), for what a provider reads there beside its id (a state
        word, when the task finished).
        """

    @abc.abstractmethod
    def client(self, settings: Settings, http: httpx.AsyncClient) -> Client | None:
        """The client for this provider's tasks endpoint; None when its token is not set."""

    @abc.abstractmethod
    def creation(
        self, settings: Settings, request: Mapping[str, Any], callback_url: str
    ) -> Creation | None:
        """The call that creates the task ``request`` describes; None when its token is not set.

        ``request`` is the user's body as the provider documents it; the call
        carries it with what taskhook owns set by the provider: where it calls
        back (``callback_url``, taskhook's own for this provider) and how.
        """

    async def create(
        self,
        settings: Settings,
        request: Mapping[str, Any],
        callback_url: str,
        *,
        within: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Created:
        """Create the task upstream, once (never retried): ``creation.send``'s guarantees."""
        call = self.creation(settings, request, callback_url)
        if call is None:
            raise ValueError(f"{self.name} has no token; check configured() first")
        return await creation.send(call, within, transport=transport)

    def configured(self, settings: Settings) -> bool:
        """True when every token setting of this provider has a value."""
        return all(getattr(settings, name.lower(), "") for name in self.token_settings)

    def knows(self, word: str) -> bool:
        """True when ``word`` is a status word of this provider."""
        return fields.normalise_word(word) in self.status_words

    def status(self, word: str | None) -> Status | None:
        return fields.status_word(word, self.status_words)

    def parse(self, payload: Any) -> Observation:
        """What ``payload`` (a bare body or the tasks-endpoint wrapper) says about its task.

        Raises ``NoTaskId`` when no task id can be found.
        """
        if not isinstance(payload, Mapping):
            raise NoTaskId(
                f"{self.name} payload is a JSON {fields.json_type(payload)}, "
                "not an object naming a task",
                provider=self.name,
            )
        if not self.is_wrapper(payload):
            observation = self.parse_body(payload, {})
            if observation.task_id is None:
                self.no_task_id(payload)
            return observation
        wrapper_id = fields.task_id(payload.get("id"))
        wrapper_trace = fields.text(payload.get("trace_id"))
        wrapper_upstream = fields.scalars(payload, only=WRAPPER_TIMES)
        # No response (or an empty one): the task exists upstream but has no
        # answer yet, "not yet" unless the wrapper itself says more.
        observation = self.parse_body(fields.mapping(payload.get("response")), payload)
        found = wrapper_id or observation.task_id
        if found is None:
            self.no_task_id(payload)
        return replace(
            observation,
            task_id=found,
            trace_id=observation.trace_id or wrapper_trace,
            upstream={**wrapper_upstream, **observation.upstream},
        )

    @staticmethod
    def is_wrapper(payload: Mapping[str, Any]) -> bool:
        """True for the tasks-endpoint wrapper ``{id, response, ...}``, not a bare body."""
        if "response" in payload:
            return True
        bare_keys = ("task_id", "success", "data", "code", "error")
        return "id" in payload and not any(key in payload for key in bare_keys)

    def no_task_id(self, payload: Mapping[str, Any]) -> NoReturn:
        if "items" in payload:
            hint = "this looks like a retrieve_batch answer; parse each of its items"
        elif "error" in payload:
            hint = "this looks like an error answer, which names no task"
        else:
            hint = self.id_hint
        raise NoTaskId(f"{self.name} payload names no task id: {hint}", provider=self.name)

    def __repr__(self) -> str:
        return f"<Provider {self.name} ({self.family})>"
