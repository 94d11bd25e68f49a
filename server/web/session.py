"""Dashboard sessions and CSRF tokens, derived from the API token by HMAC.

The cookie never holds the API token itself: it holds ``<issued>.<mac>``
where ``mac = HMAC(API_TOKEN, "dashboard-session:<issued>")``. Nothing is
stored server-side; rotating ``API_TOKEN`` ends every session at once, and a
session ends by itself after ``SESSION_MAX_AGE``. Each session has its own
CSRF token, ``HMAC(API_TOKEN, "dashboard-csrf:<session>")``, which every form
that changes something must send back.
"""

from __future__ import annotations

import hashlib
import hmac

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
    issued = str(int(now))
    return f"{issued}.{_mac(api_token, 'dashboard-session', issued)}"


def session_valid(api_token: str, value: str | None, now: float) -> bool:
    """True when ``value`` was made by ``new_session`` with this token and has not expired."""
    if not value:
        return False
    issued, _, mac = value.partition(".")
    if not issued.isdigit() or not _equal(mac, _mac(api_token, "dashboard-session", issued)):
        return False
    return -CLOCK_SKEW <= now - int(issued) < SESSION_MAX_AGE


def csrf_token(api_token: str, session: str) -> str:
    return _mac(api_token, "dashboard-csrf", session)


def csrf_valid(api_token: str, session: str, given: str | None) -> bool:
    return bool(given) and _equal(given or "", csrf_token(api_token, session))


def token_matches(api_token: str, given: str | None) -> bool:
    """Constant-time comparison of a typed-in or bearer token with the API token."""
    return bool(given) and _equal(given or "", api_token)
