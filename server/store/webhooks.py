"""The webhook side of the store contract: endpoints, messages, attempts.

An *endpoint* is a URL the application registered; a *message* is one event
for one endpoint, with its attempts. ``WebhookStore`` states what every
backend guarantees; ``server.store.base.Store`` inherits it, and
``server.store.hooks`` implements it once for both SQL backends (each adds
only its transaction seam, ``hooks.tx.Tx``). The policy (what an answer means,
when the next attempt is) is decided above the store, in
``server.core.delivery_schedule``; a backend only applies it.

Guarantees:

- **Fan-out is exact.** An enabled endpoint gets one message for each event
  of a subscribed type committed after its *position*: set to the end of the
  feed when it is created or re-enabled, and advanced as events are turned
  into messages (``claim_messages`` does that first, idempotently: two
  processes fanning out at once never make two messages of one event for one
  endpoint). A disabled endpoint gets no messages.
- **Order per task.** Of the pending messages of one (endpoint, task), only
  the earliest in commit order (the *head*) can be claimed; the next becomes
  the head once that one is delivered or failed for good.
- **Claims are exclusive and lapse.** A claimed message is held by one holder
  until ``lease`` seconds pass (``FOR UPDATE SKIP LOCKED`` semantics on a
  server database): no other holder claims it meanwhile. Each claim is a new
  attempt number. A claim that lapsed (its holder died) is claimable again,
  and the lost attempt is recorded as ``retrying`` with why it has no outcome.
- **Bounded in flight.** A claim never brings an endpoint's live claims over
  ``per_endpoint`` (across processes on SQLite; approximately on a server
  database, where concurrent claimers may each take the last slot).
- **Settling is guarded.** ``finish_message`` records the attempt always (the
  request was made), but moves the message only while the claim is still
  the holder's; a stale holder changes nothing else.
- **Durable.** Every method returns after its transaction committed.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from server.core.delivery_schedule import Next, Outcome


@dataclass(frozen=True)
class Endpoint:
    """A URL events are POSTed to. Its secrets never show in a repr."""

    id: str
    url: str
    #: Subscribed event types; None means every type.
    events: tuple[str, ...] | None
    description: str | None
    created_at: float
    disabled_at: float | None
    disabled_reason: str | None
    #: When the current run of failed attempts began (None: the last attempt was delivered).
    failing_since: float | None
    secret: str = field(repr=False)
    #: The secret before the last rotation, signing beside the new one until ``previous_until``.
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets an attempt made at ``now`` is signed with, the newest first."""
        if self.previous_secret and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def subscribes(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events


@dataclass(frozen=True)
class Claim:
    """One attempt to make: a message claimed by a holder, with what to send."""

    message_id: int
    #: Identifies this claim; settling with another token changes nothing.
    token: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    event_id: str
    event_type: str
    task_key: str
    #: The event's exact JSON body, as committed.
    body: str
    committed_at: float
    #: This attempt's number for the message (1 for the first).
    attempt: int
    #: Scheduled attempts made before this one.
    scheduled: int
    #: This attempt is a redelivery, outside the schedule.
    manual: bool
    #: For a redelivery of a message still on its schedule: when its next scheduled attempt was.
    resume_at: float | None


@dataclass(frozen=True)
class Claims:
    """What one ``claim_messages`` gave, and when the next attempt now known falls due."""

    items: list[Claim]
    #: The earliest future due time of a claimable message (None: none known).
    next_due: float | None


@dataclass(frozen=True)
class Attempt:
    """One attempt as recorded (``GET /endpoints/{id}/attempts``)."""

    event_id: str
    attempt: int
    attempted_at: float
    outcome: Outcome
    #: The HTTP status (None when no answer came).
    response_status: int | None
    duration_ms: int | None
    #: The first 1 KB of the answer's body.
    response: str | None
    #: Why there was no answer (timeout, refused connection, ...).
    error: str | None


@dataclass(frozen=True)
class Settled:
    """What ``finish_message`` did."""

    #: The claim was still the holder's: the message moved as decided.
    owned: bool
    #: The outcome recorded (a ``retrying`` becomes ``failed`` when the endpoint is disabled).
    outcome: Outcome
    #: The endpoint was disabled by this attempt, for this reason.
    disabled: str | None = None


@dataclass(frozen=True)
class Redelivery:
    """What ``redeliver_event`` queued."""

    event_type: str
    #: The endpoints that get one more attempt.
    endpoints: list[str]


@dataclass(frozen=True)
class Backlog:
    """One endpoint's undelivered messages (metrics, ``/readyz``, the dashboard)."""

    endpoint_id: str
    url: str
    disabled_at: float | None
    disabled_reason: str | None
    pending: int
    #: Commit time of its oldest undelivered event (None: nothing pending).
    oldest_pending: float | None


K = TypeVar("K")
V = TypeVar("V")


def take_turns(queues: Sequence[tuple[K, list[V]]], limit: int) -> list[tuple[K, V]]:
    """Up to ``limit`` items, one from each queue in turn (so one endpoint's backlog does
    not starve the others); each queue keeps its own order."""
    picked: list[tuple[K, V]] = []
    heads = [0] * len(queues)
    while len(picked) < limit:
        progressed = False
        for n, (owner, items) in enumerate(queues):
            if heads[n] < len(items) and len(picked) < limit:
                picked.append((owner, items[heads[n]]))
                heads[n] += 1
                progressed = True
        if not progressed:
            return picked
    return picked


class WebhookStore(abc.ABC):
    """Endpoints, their messages and attempts, as every backend keeps them."""

    # -- endpoints ---------------------------------------------------------------------

    @abc.abstractmethod
    async def create_endpoint(
        self, url: str, events: Sequence[str] | None, description: str | None, secret: str
    ) -> Endpoint:
        """Create an endpoint (``ep_…``) positioned at the end of the feed at its commit."""

    @abc.abstractmethod
    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None."""

    @abc.abstractmethod
    async def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint, the oldest first."""

    @abc.abstractmethod
    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint with its messages and attempts; False if there was none."""

    @abc.abstractmethod
    async def rotate_endpoint_secret(
        self, endpoint_id: str, secret: str, overlap: float
    ) -> Endpoint | None:
        """Sign with ``secret`` from now on; the current one keeps signing for ``overlap`` s."""

    @abc.abstractmethod
    async def enable_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """Re-enable a disabled endpoint: it gets the events committed from now on.

        An endpoint that is enabled already is left as it is.
        """

    # -- delivery ----------------------------------------------------------------------

    @abc.abstractmethod
    async def claim_messages(
        self, holder: str, limit: int, per_endpoint: int, lease: float
    ) -> Claims:
        """Fan out newly committed events, then claim up to ``limit`` due head messages.

        Endpoints take turns, so one endpoint's backlog does not starve the
        others; none gets more than ``per_endpoint`` live claims. The first
        attempt of a new message is due ``DELIVERY_RETRY_SCHEDULE[0]`` after
        its event's commit.
        """

    @abc.abstractmethod
    async def finish_message(
        self, claim: Claim, holder: str, attempt: Attempt, nxt: Next
    ) -> Settled:
        """Record ``attempt``; if the claim is still ``holder``'s, move the message to ``nxt``.

        A failure starts (or continues) the endpoint's failing run, a delivery
        ends it. The endpoint is disabled when ``nxt.disable`` says so (410) or
        its failing run reached ``DELIVERY_DISABLE_AFTER``; disabling fails its
        pending messages that nobody is sending now, and any that come back.
        """

    @abc.abstractmethod
    async def release_messages(self, holder: str) -> int:
        """Give back every claim of ``holder`` (on shutdown) without an attempt; how many."""

    @abc.abstractmethod
    async def redeliver_event(self, event_id: str, endpoint_id: str | None) -> Redelivery | None:
        """Queue one more attempt of the event, due now, outside the schedule.

        To ``endpoint_id`` if it is enabled and subscribes to the event's type
        (else nothing is queued), or else to every enabled endpoint that had a
        message for it. None when no such event is kept.
        """

    @abc.abstractmethod
    async def recover_endpoint(self, endpoint_id: str, since: float) -> int:
        """Queue one more attempt of every failed message whose event committed at or after
        ``since``; how many."""

    # -- reads -------------------------------------------------------------------------

    async def list_attempts(
        self,
        endpoint_id: str,
        *,
        outcome: Outcome | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Attempt], str | None]:
        """The endpoint's attempts, newest first; ``(page, next_cursor)``, None after the last.

        Raises ``BadCursor`` for a cursor the store did not hand out.
        """
        return await self._list_attempts(endpoint_id, outcome, limit, cursor)

    @abc.abstractmethod
    async def _list_attempts(
        self, endpoint_id: str, outcome: Outcome | None, limit: int, cursor: str | None
    ) -> tuple[list[Attempt], str | None]:
        """``list_attempts``, every argument given (the defaults are stated once, above)."""

    @abc.abstractmethod
    async def prune_webhooks(self, before: float) -> int:
        """Drop the attempts made before ``before`` and the messages delivered or failed for
        good before it (EVENT_RETENTION); how many rows. Pending messages stay."""

    @abc.abstractmethod
    async def webhook_backlog(self) -> list[Backlog]:
        """Every endpoint with its undelivered messages, the oldest endpoint first."""
