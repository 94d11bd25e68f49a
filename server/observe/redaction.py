"""Secrets out of every log line and every answer: what is redacted, and how.

Three rules, applied by ``redact`` to any text and, with the third widened to
whole paths, by ``redact_path`` to request paths (access lines):

1. The secrets this process knows (``hide``): the API token, the callback
   secrets and every provider's callback token, in their exact spelling and
   upper- or lower-cased, wherever they appear.
2. Callback paths, however mangled (``/callbacks//seedance/…``,
   ``/CALLBACKS/…``, ``/callbacks/seedance/x/…``, ``/callbacks/seed%2Fance/…``):
   every segment after ``callbacks`` that is not a provider name is redacted.
3. In a request path and its query string, every token-shaped run (16 or more
   URL-safe characters mixing upper and lower case, as generated tokens do)
   is redacted, whatever the path looks like. UUIDs, hex ids and readable
   words pass, so access lines keep most task ids.

Redaction replaces with ``[redacted]`` and never raises.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

from server.providers import NAMES

REDACTED = "[redacted]"
#: Shorter secrets are not searched for in free text (they would garble ordinary words).
MIN_HIDDEN_LENGTH = 8

_PROVIDER_NAMES = frozenset(p.lower() for p in NAMES)
# A path inside free text: from a "callbacks" segment to the next space or quote.
_CALLBACK_PATH = re.compile(r"(?i)(/+callbacks?(?:/|%2f)[^\s\"'<>]*)")
# What every such path holds (a cheap test first: most lines have none).
_HAS_CALLBACK = re.compile(r"(?i)/callbacks?(?:/|%2f)")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-]{16,}")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+@")

_hidden: tuple[str, ...] = ()
_lock = threading.Lock()


def hide(secrets: Iterable[str]) -> None:
    """Add secrets to rule 1 (idempotent); each is also hidden upper- and lower-cased."""
    global _hidden
    found = set(_hidden)
    for secret in secrets:
        if secret and len(secret) >= MIN_HIDDEN_LENGTH:
            found.update((secret, secret.upper(), secret.lower()))
    with _lock:
        # Longest first, so a secret containing another is replaced whole.
        _hidden = tuple(sorted(found, key=len, reverse=True))


def forget() -> None:
    """Drop every hidden secret (tests)."""
    global _hidden
    with _lock:
        _hidden = ()


def redact(text: str) -> str:
    """``text`` with known secrets, callback-path tokens and URL passwords replaced."""
    try:
        for secret in _hidden:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if _HAS_CALLBACK.search(text):
            text = _CALLBACK_PATH.sub(lambda m: _redact_callback_path(m.group(1)), text)
        if "@" in text:
            text = _USERINFO.sub(rf"\1{REDACTED}@", text)
        return text
    except Exception:  # redaction must never break logging; say nothing rather than leak
        return REDACTED


def redact_path(path: str) -> str:
    """A request path (with its query string) safe to log: all three rules."""
    try:
        if "%" in path:
            path = unquote(path, errors="replace")
        path = redact(path)
        return _TOKEN_RUN.sub(_token_shaped, path)
    except Exception:
        return REDACTED


def _token_shaped(match: re.Match[str]) -> str:
    run = match.group(0)
    has_upper = any("A" <= c <= "Z" for c in run)
    has_lower = any("a" <= c <= "z" for c in run)
    return REDACTED if has_upper and has_lower else run


def _redact_callback_path(path: str) -> str:
    path = unquote(path, errors="replace") if "%" in path else path
    route, mark, query = path.partition("?")
    parts = route.split("/")
    seen_callbacks = False
    for index, part in enumerate(parts):
        if not seen_callbacks:
            seen_callbacks = part.lower() in ("callbacks", "callback")
            continue
        if part and part.lower() not in _PROVIDER_NAMES and part != REDACTED:
            parts[index] = REDACTED
    if query:
        query = REDACTED
    return "/".join(parts) + mark + query
