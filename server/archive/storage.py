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
    #: The largest file it can keep; the archiver refuses larger ones as ``too_large``.
    max_file_bytes: int

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


def archive_url_problem(url: str) -> str | None:
    """What is wrong with an ``ARCHIVE_URL`` value (for the settings table), or None."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc:
        return "is not s3://bucket or s3://bucket/prefix"
    if "@" in parts.netloc:
        return "must not hold credentials (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if ":" in parts.netloc:
        return "must not name a port (put the endpoint in AWS_ENDPOINT_URL)"
    if parts.query or parts.fragment:
        return "must not have a query or a fragment"
    return None


def parse_archive_url(url: str) -> BucketURL:
    """Parse ``ARCHIVE_URL``; ``ConfigError`` says what is wrong and the expected form."""
    problem = archive_url_problem(url)
    if problem is not None:
        raise ConfigError(f"ARCHIVE_URL {problem}; set e.g. ARCHIVE_URL=s3://my-bucket/taskhook")
    parts = urlsplit(url.strip())
    return BucketURL(parts.netloc, parts.path.strip("/"))


def storage_for(settings: Settings) -> ArchiveStorage:
    """The storage the settings choose: object storage with ARCHIVE_URL, else ARCHIVE_DIR.

    Constructing it touches neither disk nor network; ``open`` does.
    """
    if settings.archive_url:
        from server.archive.s3 import S3Storage  # loads the client library only when used

        return S3Storage.from_settings(settings)
    from server.archive.folder import FolderStorage

    return FolderStorage(settings.archive_dir)
