"""Provider payloads -> one ``Observation``: the entry point for every delivery.

Pure but for one thing: bytes or decoded JSON in, an ``Observation`` or a
``ParseError`` out; no network, clock or database. The one thing: a status word
the provider's module does not know leaves the status unchanged, and is logged
once per provider and word and counted in ``taskhook_unknown_status_words_total``,
so a new word is seen rather than silently dropped. Every shape is read leniently by its provider's
module (``server.providers``): a field of an unexpected type is skipped as if
absent, never an error. The only errors are "this is not JSON" and "this names
no task", because those are the only things a sender can fix (the routes answer
400 and 422 and quarantine the body).

A payload is either a bare body (what a callback carries, and what a tasks
endpoint keeps under ``response``) or the tasks-endpoint wrapper
``{id, trace_id, request, response, created_at, ...}``; both are accepted for
every provider.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from typing import Any, NoReturn

from server.core.types import Observation
from server.errors import NotJSON
from server.observe import metrics
from server.observe.logs import event
from server.providers import get
from server.providers.fields import normalise_word

log = logging.getLogger("taskhook.providers")


def decode(body: bytes) -> Any:
    """The JSON value of a raw body, or ``NotJSON`` saying why not."""
    try:
        # utf-8-sig: a leading byte-order mark is harmless, so it is tolerated.
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotJSON(f"body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise NotJSON("body nests JSON arrays/objects deeper than we read") from None
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # an integer longer than Python's digit limit
        raise NotJSON("body is not valid JSON: it holds a number too long to read") from None


def _reject_constant(name: str) -> NoReturn:
    raise NotJSON(f"body is not valid JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    """A JSON number as a float; one that overflows a double (``1e999``) is refused."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise NotJSON(f"body holds the number {text[:40]}, which overflows a double")
    return value


def _finite_int(text: str) -> int:
    """A JSON integer; one beyond a double's range (over about 1.8e308) is refused."""
    value = int(text)
    if len(text) > 300:
        try:
            float(value)
        except OverflowError:
            raise NotJSON(
                f"body holds a {len(text)}-digit integer, which overflows a double"
            ) from None
    return value


#: Made once (``json.loads`` with options builds a decoder per call).
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite, parse_int=_finite_int
)


def parse_body(provider: str, body: bytes) -> Observation:
    return parse_payload(provider, decode(body))


def parse_payload(provider: str, payload: Any) -> Observation:
    """What ``payload`` (bare body or tasks-endpoint wrapper) says about its task.

    Raises ``UnknownProvider`` (a ``ValueError``: a caller's bug, routes 404
    first) and ``NoTaskId`` when no task id can be found.
    """
    chosen = get(provider)
    observation = chosen.parse(payload)
    word = observation.upstream_status
    if word is not None and not chosen.knows(word):
        notice_unknown_word(provider, word)
    return observation


#: Distinct unknown words remembered (and labelled) per provider; past it they count
#: as ``_other``, so a sender cannot grow the metrics without bound.
MAX_UNKNOWN_WORDS = 100
_unknown: dict[str, set[str]] = {}
_unknown_lock = threading.Lock()


def notice_unknown_word(provider: str, word: str) -> None:
    """Count an unknown status word; log it the first time ``provider`` sends it."""
    label = re.sub(r"[^a-z0-9_]", "?", normalise_word(word))[:40]
    with _unknown_lock:
        seen = _unknown.setdefault(provider, set())
        first = label not in seen
        if first and len(seen) >= MAX_UNKNOWN_WORDS:
            label, first = "_other", False
        elif first:
            seen.add(label)
    metrics.UNKNOWN_STATUS_WORDS.labels(provider, label).inc()
    if first:
        event(log, "unknown_status_word", logging.WARNING, provider=provider, word=label)
