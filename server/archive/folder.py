"""Archived files in a local folder (``ARCHIVE_DIR``), content-addressed.

A file lives at ``<dir>/<sha[:2]>/<sha>`` (256 shard folders keep each folder
small). ``put`` writes to a temporary file at the top of the folder, so the
final rename is atomic, fsyncs it, renames it into place (or drops it when the
same bytes are already there) and fsyncs the folder, so a file that ``put``
returned survives a power cut.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import anyio

from server.archive.storage import FileMissing, StorageError, Stored, check_digest

log = logging.getLogger("taskhook.archive")

TEMP_PREFIX = ".tmp-"
CHUNK = 64 * 1024


def archive_path(archive_dir: Path, sha256: str) -> Path:
    """``<dir>/<sha[:2]>/<sha>``; ``FileMissing`` for anything but a lower-case hex digest."""
    check_digest(sha256)
    return archive_dir / sha256[:2] / sha256


def cleanup_temp_files(archive_dir: Path) -> int:
    """Delete partial files left by a crash; call at start-up, before any ``put``."""
    if not archive_dir.is_dir():
        return 0
    removed = 0
    for leftover in archive_dir.glob(TEMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


class FolderStorage:
    """``ArchiveStorage`` in a local folder (the default)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory)
        self.max_file_bytes = 2**63 - 1  # the disk is the limit

    def __repr__(self) -> str:
        return f"FolderStorage({self.location!r})"

    async def open(self, *, cleanup: bool) -> None:
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"ARCHIVE_DIR {self.location} cannot be created: {exc}") from exc
        if cleanup and (removed := await asyncio.to_thread(cleanup_temp_files, self.directory)):
            log.info("archive removed %d partial file(s) left by a crash", removed)

    async def put(self, chunks: AsyncIterable[bytes], content_type: str) -> Stored:
        spool = _Spool(self.directory)
        handed_off = False
        try:
            async for chunk in chunks:  # the source's own errors propagate as they are
                spool.write(chunk)
            # From here the worker thread owns the temp file, cleanup included, so a
            # cancellation cannot close its descriptor under it.
            handed_off = True
            return await asyncio.to_thread(spool.commit)
        finally:
            if not handed_off:
                spool.discard()

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(archive_path(self.directory, sha256).is_file)

    async def open_range(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = archive_path(self.directory, sha256)
        if not await asyncio.to_thread(path.is_file):
            raise FileMissing(f"no archived file has SHA-256 {sha256}")
        return _read(path, start, end)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(archive_path(self.directory, sha256).unlink, missing_ok=True)

    async def status(self) -> str | None:
        return await asyncio.to_thread(self._probe)

    async def close(self) -> None:
        pass

    def _probe(self) -> str | None:
        """Why ARCHIVE_DIR cannot take files now, or None (a real create-and-delete)."""
        try:
            with tempfile.NamedTemporaryFile(prefix=".probe-", dir=self.directory):
                pass
            free = shutil.disk_usage(self.directory).free
        except OSError as exc:
            return f"ARCHIVE_DIR {self.location} is not writable: {exc}"
        if free == 0:
            return f"ARCHIVE_DIR {self.location} is on a full disk"
        return None


async def _read(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        file = await anyio.open_file(path, "rb")
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    async with file:
        await file.seek(start)
        left = end - start
        while left > 0:
            chunk = await file.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


class _Spool:
    """The partial file, in the archive folder itself so the final rename is atomic."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.fd: int | None = None
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        try:
            if self.fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self.fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.directory)
                self.path = Path(name)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise StorageError(f"cannot write to ARCHIVE_DIR {self.directory}: {exc}") from exc
        self.hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> Stored:
        """Blocking (fsync): make the bytes durable, then rename them into place."""
        try:
            if self.fd is None:  # an empty body: nothing was written yet
                self.write(b"")
            assert self.fd is not None and self.path is not None
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            digest = self.hash.hexdigest()
            final = archive_path(self.directory, digest)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                self.path.unlink()
            else:
                os.replace(self.path, final)
                _fsync_directory(final.parent)
            self.path = None
            return Stored(digest, self.size)
        except OSError as exc:
            raise StorageError(
                f"cannot store a file in ARCHIVE_DIR {self.directory}: {exc}"
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
