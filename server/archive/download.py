"""Fetch one result file into the archive's storage: streamed, size-capped.

Result URLs expire (Seedance 2.0: 24 hours), so the archive copies each file
while it still can. This module does one copy and nothing else; queueing,
retries and bookkeeping belong to its caller, which reads ``permanent`` on
the errors below to decide whether a retry can help.

Signed result URLs carry credentials in their query string, so every URL that
reaches an error message, an attribute or a log goes through ``redact_url``.

Destinations are vetted where the connection is made, by the client from
``egress.archive_client`` (resolve once, refuse private addresses, connect to
the vetted address); this module turns its refusal into ``PrivateAddress``.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from server.archive.egress import AddressRefused
from server.archive.storage import ArchiveStorage
from server.errors import ArchiveError

_MEANINGLESS_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
# A private table so guesses do not depend on the host's /etc/mime.types.
_MIME = mimetypes.MimeTypes()
for _type, _ext in (("image/webp", ".webp"), ("video/quicktime", ".mov"), ("audio/wav", ".wav")):
    _MIME.add_type(_type, _ext)


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to log and to show."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + (f":{port}" if port else ""), parts.path, "", ""))


class DownloadError(ArchiveError):
    """A copy failed. ``url`` is redacted; ``permanent`` says a retry cannot help."""

    reason = "download_failed"
    permanent = False

    def __init__(self, url: str, detail: str) -> None:
        self.url = redact_url(url)
        self.message = f"Downloading {self.url}: {detail}"
        super().__init__(self.message)


class RefusedURL(DownloadError):
    reason, permanent = "refused_url", True


class PrivateAddress(DownloadError):
    reason, permanent = "private_address", True


class TooLarge(DownloadError):
    reason, permanent = "too_large", True


class HTTPStatusError(DownloadError):
    reason = "http_status"

    def __init__(self, url: str, status_code: int) -> None:
        self.status_code = status_code
        self.permanent = not (status_code in (408, 429) or status_code >= 500)
        hint = " (a signed URL answers 403 once it has expired)" if status_code == 403 else ""
        super().__init__(url, f"the server answered HTTP {status_code}{hint}")


class TooManyRedirects(DownloadError):
    reason, permanent = "too_many_redirects", True


class DownloadTimeout(DownloadError):
    reason = "timeout"


class NetworkError(DownloadError):
    reason = "network"


@dataclass(frozen=True)
class Downloaded:
    """A stored copy: its digest, length and the content type the origin declared."""

    sha256: str
    bytes: int
    content_type: str


def guess_content_type(url: str, header: str | None) -> str:
    """The header's media type without parameters if it says something, else by extension."""
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if "/" in media_type and media_type not in _MEANINGLESS_TYPES:
        return media_type
    guessed, _ = _MIME.guess_type(urlsplit(url).path)
    return guessed or "application/octet-stream"


async def download(
    url: str,
    storage: ArchiveStorage,
    *,
    http: httpx.AsyncClient,
    max_bytes: int,
    timeout: float = 300.0,  # noqa: ASYNC109 - a deadline for the whole copy, set per call
    max_redirects: int = 5,
) -> Downloaded:
    """Copy ``url`` into ``storage`` under its SHA-256; the same bytes are stored once.

    ``timeout`` bounds the copy as a whole (resolving, redirects, body, storing);
    a slow trickle cannot hold a download slot for ever. ``http`` must come from
    ``egress.archive_client`` for the SSRF guard to hold. Raises a
    ``DownloadError`` for the origin's failures and the storage's
    ``StorageError`` for its own.
    """
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _fetch(url, storage, http, max_bytes, max_redirects)
    except TimeoutError:
        if deadline.expired():
            raise DownloadTimeout(url, f"not finished within {timeout:g} s") from None
        raise


async def _fetch(
    url: str,
    storage: ArchiveStorage,
    http: httpx.AsyncClient,
    max_bytes: int,
    max_redirects: int,
) -> Downloaded:
    """Follow redirects ourselves (the client vets every hop's address) and stream
    the final body into ``storage``."""
    current = _parse(url)
    for _hop in range(max_redirects + 1):
        where = str(current)
        try:
            async with http.stream(
                "GET", current, headers={"Accept-Encoding": "identity"}, follow_redirects=False
            ) as response:
                if response.is_redirect:
                    current = _parse(response.headers["location"], base=current)
                    continue
                if response.status_code not in (200, 203):
                    raise HTTPStatusError(where, response.status_code)
                declared = _declared_length(response)
                if declared is not None and declared > max_bytes:
                    raise TooLarge(where, f"Content-Length {declared} exceeds {max_bytes} bytes")
                header = response.headers.get("content-type")
                content_type = guess_content_type(where, header)
                if content_type.endswith("octet-stream"):
                    content_type = guess_content_type(url, header)
                body = _checked_body(response, where, max_bytes, declared)
                stored = await storage.put(body, content_type)
                return Downloaded(stored.sha256, stored.bytes, content_type)
        except AddressRefused as exc:
            raise PrivateAddress(where, exc.message) from exc
        except httpx.TimeoutException as exc:
            raise DownloadTimeout(
                where, f"the connection timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise NetworkError(where, _describe(exc, current)) from exc
    raise TooManyRedirects(url, f"more than {max_redirects} redirects")


async def _checked_body(
    response: httpx.Response, where: str, max_bytes: int, declared: int | None
) -> AsyncIterator[bytes]:
    """The body's chunks; raises before a chunk that would pass the cap, and at the end
    when the length differs from ``Content-Length`` (nothing is stored then)."""
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(where, f"body exceeds {max_bytes} bytes")
        yield chunk
    if declared is not None and declared != size:
        raise NetworkError(where, f"got {size} bytes, Content-Length said {declared}")


def _describe(exc: Exception, url: httpx.URL) -> str:
    """The exception's name and text, unless the text quotes the URL's secret query."""
    text = str(exc)
    query = url.query.decode("ascii", "replace")
    if not text or (query and query in text):
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _parse(location: str, base: httpx.URL | None = None) -> httpx.URL:
    try:
        target = base.join(location) if base is not None else httpx.URL(location)
    except httpx.InvalidURL:
        raise RefusedURL(location, "not a valid URL") from None
    if target.scheme not in ("http", "https"):
        raise RefusedURL(str(target), "only http and https URLs are archived")
    if not target.host:
        raise RefusedURL(str(target), "the URL names no host")
    return target


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    return int(value) if value.isascii() and value.isdigit() and not encoded else None
