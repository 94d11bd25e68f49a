"""Webhook delivery: the push side of the outbox.

``signing`` (Standard Webhooks headers), ``schedule`` (what an answer means and
when the next attempt is; pure), ``sender`` (one HTTP attempt) and ``worker``
(the ``Delivery`` service that claims attempts from the store and sends them).
"""
