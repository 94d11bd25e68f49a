"""Fetch one result file into the archive: streamed, size-capped, content-addressed.

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
import calendar
import hashlib
import mimetypes
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from server.archive.egress import AddressRefused
from server.errors import ArchiveError

TEMP_PREFIX = ".tmp-"
DEFAULT_URL_LIFETIME = 24 * 3600.0  # Seedance 2.0 documents 24 hours
_ABSOLUTE_AFTER = 1_000_000_000  # relative validities are <= 30 days; unix times are 10 digits
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
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


class StorageError(DownloadError):
    """Writing to the archive directory failed (disk full, not writable)."""

    reason = "storage"


@dataclass(frozen=True)
class Downloaded:
    sha256: str
    bytes: int
    content_type: str
    path: Path


def archive_path(archive_dir: Path, sha256: str) -> Path:
    """``<dir>/<sha[:2]>/<sha>``: 256 shard folders keep each directory small.

    Refuses anything but a lower-case hex digest, so a digest taken from a
    request path can never name a file outside the archive.
    """
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lower-case hex SHA-256 digest")
    return archive_dir / sha256[:2] / sha256


def cleanup_temp_files(archive_dir: Path) -> int:
    """Delete partial downloads left by a crash; call at start-up, before any download."""
    if not archive_dir.is_dir():
        return 0
    removed = 0
    for leftover in archive_dir.glob(TEMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def guess_content_type(url: str, header: str | None) -> str:
    """The header's media type without parameters if it says something, else by extension."""
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if "/" in media_type and media_type not in _MEANINGLESS_TYPES:
        return media_type
    guessed, _ = _MIME.guess_type(urlsplit(url).path)
    return guessed or "application/octet-stream"


def url_expiry(url: str, finished_at: float) -> float:
    """The unix time a signed URL stops working; ``finished_at`` + 24 h when it does not say.

    TOS (``X-Tos-*``) and S3 v4 (``X-Amz-*``) give a validity in seconds
    relative to the signing time ``X-...-Date`` (``yyyyMMddTHHmmssZ``). Without
    that date the validity counts from ``finished_at``, a late bound since the
    URL was signed before we got it. OSS/S3 v2 ``Expires`` is a unix time.
    """
    params = {key.lower(): value for key, value in parse_qsl(urlsplit(url).query)}
    for prefix in ("x-tos-", "x-amz-"):
        seconds = _whole_number(params.get(prefix + "expires"))
        if seconds is None:
            continue
        if seconds >= _ABSOLUTE_AFTER:
            return float(seconds)
        signed_at = _basic_iso_time(params.get(prefix + "date"))
        return (finished_at if signed_at is None else signed_at) + seconds
    absolute = _whole_number(params.get("expires"))
    if absolute is not None and absolute >= _ABSOLUTE_AFTER:
        return float(absolute)
    return finished_at + DEFAULT_URL_LIFETIME


def _whole_number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _basic_iso_time(value: str | None) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(value or "", "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


async def download(
    url: str,
    archive_dir: Path,
    *,
    http: httpx.AsyncClient,
    max_bytes: int,
    timeout: float = 300.0,  # noqa: ASYNC109 - a deadline for the whole copy, set per call
    max_redirects: int = 5,
) -> Downloaded:
    """Copy ``url`` into ``archive_dir`` under its SHA-256; the same bytes are stored once.

    ``timeout`` bounds the network part as a whole (resolving, redirects,
    body); a slow trickle cannot hold a download slot for ever. ``http``
    must come from ``egress.archive_client`` for the SSRF guard to hold.
    """
    spool = _Spool(archive_dir, url)
    deadline = asyncio.timeout(timeout)
    handed_off = False
    try:
        try:
            async with deadline:
                content_type = await _fetch(url, spool, http, max_bytes, max_redirects)
        except TimeoutError:
            if deadline.expired():
                raise DownloadTimeout(url, f"not finished within {timeout:g} s") from None
            raise
        # From here the worker thread owns the temp file, cleanup included, so a
        # cancellation cannot close its descriptor under it.
        handed_off = True
        final = await asyncio.to_thread(spool.commit)
        return Downloaded(spool.hash.hexdigest(), spool.size, content_type, final)
    finally:
        if not handed_off:
            spool.discard()


async def _fetch(
    url: str,
    spool: _Spool,
    http: httpx.AsyncClient,
    max_bytes: int,
    max_redirects: int,
) -> str:
    """Follow redirects ourselves (the client vets every hop's address) and stream
    the body into ``spool``."""
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
                spool.open()
                async for chunk in response.aiter_bytes():
                    if spool.size + len(chunk) > max_bytes:
                        raise TooLarge(where, f"body exceeds {max_bytes} bytes")
                    spool.write(chunk)
                if declared is not None and declared != spool.size:
                    raise NetworkError(
                        where, f"got {spool.size} bytes, Content-Length said {declared}"
                    )
                header = response.headers.get("content-type")
                guessed = guess_content_type(where, header)
                return (
                    guess_content_type(url, header) if guessed.endswith("octet-stream") else guessed
                )
        except AddressRefused as exc:
            raise PrivateAddress(where, exc.message) from exc
        except httpx.TimeoutException as exc:
            raise DownloadTimeout(
                where, f"the connection timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise NetworkError(where, _describe(exc, current)) from exc
    raise TooManyRedirects(url, f"more than {max_redirects} redirects")


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
    return int(value) if value.isdigit() and not encoded else None


class _Spool:
    """The partial download, in ``archive_dir`` itself so the final rename is atomic."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory, self.url = directory, url
        self.path: Path | None = None
        self.fd: int | None = None
        self.hash = hashlib.sha256()
        self.size = 0

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.directory)
        except OSError as exc:
            raise StorageError(
                self.url, f"cannot create a file in {self.directory}: {exc}"
            ) from exc
        self.path = Path(name)

    def write(self, chunk: bytes) -> None:
        assert self.fd is not None
        self.hash.update(chunk)
        self.size += len(chunk)
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise StorageError(self.url, f"cannot write to {self.directory}: {exc}") from exc

    def commit(self) -> Path:
        """Blocking (fsync): make the bytes durable, then rename them into place."""
        try:
            assert self.fd is not None and self.path is not None
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            final = archive_path(self.directory, self.hash.hexdigest())
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                self.path.unlink()
            else:
                os.replace(self.path, final)
                _fsync_directory(final.parent)
            self.path = None
            return final
        except OSError as exc:
            raise StorageError(
                self.url, f"cannot store the file in {self.directory}: {exc}"
            ) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
