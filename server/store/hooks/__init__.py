"""The webhook outbox, written once for every backend.

``server.store.webhooks`` states the contract; this package implements it
once, as SQL and logic over ``Tx`` (one write transaction); a backend
supplies only its ``Tx`` and how a write runs (``_hook_write``), and reads
through the primitives every SQL store has (``_select``, ``_in``):

- ``tx``: the ``Tx`` seam (what differs by engine) and the rows it reads;
- ``queue``: fan-out of committed events into messages, the per-task head,
  requeueing (redelivery, recovery), retention;
- ``endpoints``: creating, rotating, enabling, disabling, removing endpoints;
- ``claims``: claiming due heads under a lease, settling an attempt, releasing;
- ``methods``: the ``WebhookStore`` methods, over those primitives.
"""
