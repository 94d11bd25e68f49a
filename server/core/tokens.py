"""Callback URL tokens: one per provider, derived from the callback secrets.

The token in ``/callbacks/{provider}/{token}`` is an HMAC of the provider name
under a secret, so a URL handed to one provider cannot post as another, and
rotating ``CALLBACK_SECRETS`` (new secret first, old ones kept) keeps every
URL already handed out working.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable


@functools.lru_cache(maxsize=256)  # a pure function of a few secrets and providers; hot path
def callback_token(secret: str, provider: str) -> str:
    digest = hmac.new(secret.encode(), f"callback:{provider}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def token_accepted(token: str, provider: str, secrets: Iterable[str]) -> bool:
    """Constant-time check of ``token`` against every accepted secret."""
    given = token.encode("utf-8", "surrogateescape")
    accepted = False
    for secret in secrets:
        # No early exit: the time taken does not tell which secret matched.
        accepted |= hmac.compare_digest(given, callback_token(secret, provider).encode())
    return accepted


def callback_url(base_url: str, secret: str, provider: str) -> str:
    return f"{base_url.rstrip('/')}/callbacks/{provider}/{callback_token(secret, provider)}"
