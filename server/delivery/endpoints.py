"""What an endpoint may be, and how one is shown: shared by the API, the CLI and the dashboard.

An endpoint URL is ``http(s)://host[:port][/path][?query]`` without a fragment
or whitespace, at most ``MAX_URL`` characters. Loopback and private addresses
are allowed: endpoints are set by the API token holder, and the application
usually sits on a private network. Redirects are never followed (the sender),
so a URL cannot be bent somewhere else after it was checked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from server.core.decide import EVENT_TYPES
from server.core.types import iso_time
from server.store.webhooks import Endpoint

MAX_URL = 2000
MAX_DESCRIPTION = 1000


class InvalidEndpoint(ValueError):
    """A field of an endpoint that cannot be used; the message says which and why."""


def check_url(given: Any) -> str:
    if not isinstance(given, str) or not given.strip():
        raise InvalidEndpoint("'url' must be a non-empty string: http(s)://host[:port][/path]")
    url: str = given.strip()
    if len(url) > MAX_URL:
        raise InvalidEndpoint(f"'url' is {len(url)} characters long; at most {MAX_URL}")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidEndpoint("'url' must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidEndpoint(f"'url' {url[:100]!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidEndpoint(
            f"'url' must start with http:// or https://, not {(parts.scheme or '(none)')!r}"
        )
    if not parts.hostname:
        raise InvalidEndpoint(f"'url' {url[:100]!r} names no host")
    if parts.fragment:
        raise InvalidEndpoint("'url' must not have a #fragment (it is never sent)")
    return url


def check_events(events: Any) -> tuple[str, ...] | None:
    """The subscribed types, each once and in the order given; None (absent) is every type."""
    if events is None:
        return None
    if not isinstance(events, list) or not events:
        raise InvalidEndpoint(
            f"'events' must be a non-empty list of event types ({', '.join(EVENT_TYPES)}), "
            "or absent for every type"
        )
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidEndpoint(
            f"'events' holds {unknown[0]!r}, which is not an event type; "
            f"use {', '.join(EVENT_TYPES)}"
        )
    return tuple(dict.fromkeys(events))


def check_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidEndpoint(
            f"'description' must be a string of at most {MAX_DESCRIPTION} characters"
        )
    return description


def parse_types(text: str) -> list[str]:
    """``T,T,...`` (the CLI's ``--events``) as a list."""
    return [part.strip() for part in text.split(",") if part.strip()]


def view(endpoint: Endpoint, *, secret: str | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it; the secret only when given (just created or rotated)."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events) if endpoint.events is not None else None,
        "description": endpoint.description,
    }
    if secret is not None:
        body["secret"] = secret
    body.update(
        disabled=endpoint.disabled,
        disabled_at=iso_time(endpoint.disabled_at),
        disabled_reason=endpoint.disabled_reason,
        failing_since=iso_time(endpoint.failing_since),
        created_at=iso_time(endpoint.created_at),
    )
    return body
