"""Dashboard sessions and CSRF tokens, derived from the API token by HMAC.

The cookie never holds the API token itself: it holds ``<issued>.<nonce>.<mac>``
where ``mac = HMAC(API_TOKEN, "dashboard-session:<issued>.<nonce>")``. A session
is valid while its MAC checks and ``SESSION_MAX_AGE`` has not passed, and it has
not been revoked: signing out stores the session's ``revocation_key`` in the
database (so a copied cookie stops working in every process) until the session
would have expired anyway. Rotating ``API_TOKEN`` ends every session at once.
Each session has its own CSRF token, ``HMAC(API_TOKEN, "dashboard-csrf:<session>")``,
which every form that changes something must send back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE_NAME = "taskhook_session"
SESSION_MAX_AGE = 12 * 3600
#: Workers' clocks may disagree a little; a session issued further in the future is forged.
CLOCK_SKEW = 60


def _mac(api_token: str, purpose: str, value: str) -> str:
    message = f"{purpose}:{value}".encode()
    return hmac.new(api_token.encode(), message, hashlib.sha256).hexdigest()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode())


def new_session(api_token: str, now: float) -> str:
    """A fresh session: issued now, with a random nonce so two sign-ins never share one."""
    body = f"{int(now)}.{secrets.token_urlsafe(12)}"
    return f"{body}.{_mac(api_token, 'dashboard-session', body)}"


def session_valid(api_token: str, value: str | None, now: float) -> bool:
    """True when ``value`` was made by ``new_session`` with this token and has not expired.

    Revocation is checked apart (it needs the database): see ``revocation_key``.
    """
    if not value or len(value) > 200:
        return False
    body, _, mac = value.rpartition(".")
    issued = body.partition(".")[0]
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
        return False
    if not _equal(mac, _mac(api_token, "dashboard-session", body)):
        return False
    return -CLOCK_SKEW <= now - int(issued) < SESSION_MAX_AGE


def expires_at(value: str) -> float:
    """When a valid session ends by itself."""
    return int(value.partition(".")[0]) + SESSION_MAX_AGE


def revocation_key(value: str) -> str:
    """The settings key that marks this session signed out (a digest, never the cookie)."""
    return "dashboard.revoked." + hashlib.sha256(value.encode()).hexdigest()[:32]


def csrf_token(api_token: str, session: str) -> str:
    return _mac(api_token, "dashboard-csrf", session)


def csrf_valid(api_token: str, session: str, given: str | None) -> bool:
    return bool(given) and _equal(given or "", csrf_token(api_token, session))


def token_matches(api_token: str, given: str | None) -> bool:
    """Constant-time comparison of a typed-in or bearer token with the API token."""
    return bool(given) and _equal(given or "", api_token)
