"""Submit records in the store contract: idempotency keys held across processes.

``SubmitStore`` states them; ``server.store.base.Store`` inherits it, so every
backend implements these methods. The guarantee (stated with the others in
``server.store.base``): at most one record holds a given ``Idempotency-Key``
at a time, whichever process or replica asks.
"""

from __future__ import annotations

import abc

from server.store.records import SubmitRecord, SubmitStart


class SubmitStore(abc.ABC):
    """The records of ``POST /submit``: begun before the upstream call, finished after."""

    # -- submits -----------------------------------------------------------------------

    @abc.abstractmethod
    async def begin_submit(self, start: SubmitStart) -> tuple[SubmitRecord, bool]:
        """Record a submit about to call upstream, or return the record holding its key.

        Atomic across processes. When ``start.key`` is None, or no record
        holds that key now (none has it, or its hold ran out), a new
        unanswered record is kept, holding the key for ``start.hold_for``
        seconds, and returned with True: the caller may call upstream. Else
        the record holding the key is returned unchanged with False (the
        caller compares fingerprints and answers from it). At most one record
        holds a key at any moment. Records begun before ``start.forget_before``
        that hold no key may be dropped in the same transaction.
        """

    @abc.abstractmethod
    async def finish_submit(
        self,
        submit_id: int,
        status: int,
        body: str,
        *,
        task_id: str | None = None,
        trace_id: str | None = None,
        hold_for: float | None = None,
    ) -> SubmitRecord:
        """Record the answer of submit ``submit_id``; returns the record as kept.

        ``hold_for`` None lets go of the key at once (the client may use it
        again); a number keeps it held for that many seconds from now, so the
        key answers with this record until then. Committed before it returns.
        """

    @abc.abstractmethod
    async def get_submit(self, submit_id: int) -> SubmitRecord | None:
        """The submit record ``submit_id``, or None (also for ids no record could have)."""
