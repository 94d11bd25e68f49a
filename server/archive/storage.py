"""Where archived files live: one contract, two homes (a local folder, S3-compatible storage).

The archiver, the ``/files`` route and the dashboard talk to an ``ArchiveStorage``
and never learn which one is configured: ``ARCHIVE_URL=s3://bucket/prefix``
selects object storage (``server.archive.s3``), otherwise files live in
``ARCHIVE_DIR`` (``server.archive.folder``).

What every storage guarantees:

- **Content-addressed.** A file is named by the lower-case hex SHA-256 of its
  bytes; the same bytes are stored once, however many URLs carried them.
- **Streamed.** ``put`` consumes the bytes as they arrive and never holds a
  whole file in memory; ``open_range`` streams too.
- **Visible only complete.** Until ``put`` returns, no reader can see the file
  under its digest; a failed or cancelled ``put`` leaves nothing under it.
  (The caller records the copy in the database only after ``put`` returned.)
- **Errors are ours.** A failure of the storage itself raises ``StorageError``
  (a retry may help: disk full, bucket unreachable, 5xx, timeout), with a
  message that never holds a credential. An exception raised by the chunk
  source of ``put`` propagates unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from server.errors import ArchiveError, ConfigError

if TYPE_CHECKING:
    from server.settings import Settings

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: S3 copies at most 5 GiB in one request, and a large file is copied to its digest.
MAX_OBJECT_BYTES = 5 * 1024**3


class StorageError(ArchiveError):
    """The archive's storage could not take or give a file now; a retry may help."""

    reason = "storage"
    permanent = False


class FileMissing(ArchiveError):
    """No file with this digest is in the storage."""

    reason = "missing"
    permanent = True


@dataclass(frozen=True)
class Stored:
    """What ``put`` stored: the digest that names it and its length."""

    sha256: str
    bytes: int


class ArchiveStorage(Protocol):
    """The contract every home of archived files keeps (see the module docstring)."""

    #: Where the files are, safe to log and show (no credentials): a path or s3://bucket/prefix.
    location: str

    async def open(self, *, cleanup: bool) -> None:
        """Get ready to take files; ``cleanup`` removes what a crashed ``put`` left.

        Only a starting server cleans up (a one-off command could remove a
        running server's upload). Raises ``StorageError`` when the storage
        cannot be prepared at all (a folder that cannot be created).
        """
        ...

    async def put(self, chunks: AsyncIterable[bytes], content_type: str) -> Stored:
        """Store the bytes ``chunks`` yields under their SHA-256 and return it."""
        ...

    async def exists(self, sha256: str) -> bool:
        """Whether a complete file with this digest is stored."""
        ...

    async def open_range(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a stored file, in chunks.

        Awaiting this opens the file (``FileMissing`` if there is none), so a
        caller can answer 404 before it starts a response; iterating streams.
        """
        ...

    async def delete(self, sha256: str) -> None:
        """Remove a stored file; removing one that is not there is no error."""
        ...

    async def status(self) -> str | None:
        """Why the storage cannot take files right now (a live check), or None."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


def check_digest(sha256: str) -> str:
    """``sha256`` if it is a lower-case hex SHA-256 digest, else ``FileMissing``.

    Every storage runs names through this, so a digest taken from a request
    path can never name anything outside the archive.
    """
    if not SHA256_HEX.fullmatch(sha256):
        raise FileMissing(f"{sha256[:80]!r} is not a lower-case hex SHA-256 digest")
    return sha256


@dataclass(frozen=True)
class BucketURL:
    """``ARCHIVE_URL=s3://bucket/prefix``, parsed."""

    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_archive_url(url: str) -> BucketURL:
    """Parse ``ARCHIVE_URL``; ``ConfigError`` names the setting and the expected form."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"ARCHIVE_URL={_shown(url)} is not understood; use s3://bucket or "
            "s3://bucket/prefix (credentials come from AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, never from the URL)."
        )
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(
            "ARCHIVE_URL must not hold credentials or a port; put the keys in "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the endpoint in AWS_ENDPOINT_URL."
        )
    return BucketURL(parts.netloc, parts.path.strip("/"))


def _shown(url: str) -> str:
    """The URL for a message, without anything that could be a credential."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{host}{parts.path}" if parts.scheme else "<not a URL>")


def check_archive_url(settings: Settings) -> None:
    """``ConfigError`` when ARCHIVE_URL cannot work with the other settings."""
    parse_archive_url(settings.archive_url)
    if settings.archive_max_bytes > MAX_OBJECT_BYTES:
        raise ConfigError(
            f"ARCHIVE_MAX_BYTES={settings.archive_max_bytes} is above {MAX_OBJECT_BYTES} "
            "(5 GiB), the largest file the object store can copy in one request; "
            f"with ARCHIVE_URL set, set it to at most {MAX_OBJECT_BYTES}."
        )


def storage_for(settings: Settings) -> ArchiveStorage:
    """The storage the settings choose: object storage with ARCHIVE_URL, else ARCHIVE_DIR.

    Constructing it touches neither disk nor network; ``open`` does.
    """
    if settings.archive_url:
        from server.archive.s3 import S3Storage  # loads the client library only when used

        return S3Storage.from_settings(settings)
    from server.archive.folder import FolderStorage

    return FolderStorage(settings.archive_dir)
