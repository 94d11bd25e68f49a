"""Standard Webhooks signing: endpoint secrets and the headers of one attempt.

Signatures are made by the ``standardwebhooks`` library itself (``Webhook.sign``),
the same code a receiving application verifies with, so the two cannot drift.
A signature covers ``"{webhook-id}.{webhook-timestamp}.{body}"``; during a
secret rotation the header carries one signature per secret, space-separated,
and a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import secrets as random
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
#: Random bytes in a new secret (Svix uses 24; HMAC-SHA256 needs no more than 32).
SECRET_BYTES = 24
#: How long a rotated-out secret keeps signing beside the new one.
ROTATION_OVERLAP = 24 * 3600.0


def new_secret() -> str:
    """A fresh ``whsec_<base64>`` secret."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def is_secret(text: str) -> bool:
    """Whether ``text`` is a ``whsec_`` secret whose key decodes to at least 16 bytes."""
    if not text.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= 16


def signature(event_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The ``webhook-signature`` value: ``v1,<sig>`` per secret, space-separated, in order."""
    if not secrets:
        raise ValueError("an attempt needs at least one secret to sign with")
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(event_id, moment, body) for secret in secrets)


def headers(event_id: str, body: bytes, secrets: Sequence[str], now: float) -> dict[str, str]:
    """Every header of one attempt; ``webhook-id`` is the event id on every attempt."""
    timestamp = int(now)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(event_id, timestamp, body, secrets),
        "content-type": "application/json",
    }
