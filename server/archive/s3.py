"""Archived files in S3-compatible object storage (``ARCHIVE_URL=s3://bucket/prefix``).

One bucket serves every replica. The object key of a file is
``<prefix>/<sha256>``. The client library is obstore (Rust's ``object_store``
under a small async Python API): it signs requests, retries refused
connections, 5xx answers and timeouts with backoff, streams reads and does
multipart uploads.

How ``put`` keeps the storage contract: the digest is known only once the
last byte has arrived, so a file smaller than ``part_size`` is collected in
memory (at most ``part_size`` bytes) and PUT under its digest in one request;
a larger one is streamed as a multipart upload to a temporary key under
``.incoming/``, then copied to its digest on the server side and the temporary
object deleted. An object appears under its digest only complete (S3 makes a
PUT, a completed multipart upload and a copy visible atomically), and the
caller records it only after that. A multipart upload that fails is aborted;
a crash can leave an incomplete one, which a bucket lifecycle rule removes
(see the README), and ``.incoming/`` objects older than an hour are deleted
when a server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from server.archive.storage import (
    BucketURL,
    FileMissing,
    StorageError,
    Stored,
    check_digest,
    parse_archive_url,
)
from server.service import cancel
from server.settings import read_dotenv

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

    from server.settings import Settings

log = logging.getLogger("taskhook.archive")

T = TypeVar("T")

#: S3 copies at most 5 GiB in one request, and a large file is copied to its digest.
MAX_OBJECT_BYTES = 5 * 1024**3
PART_SIZE = 8 * 1024**2  # S3's smallest part is 5 MiB
UPLOAD_CONCURRENCY = 2  # parts in flight per upload: memory <= (1 + 2) * PART_SIZE
READ_WINDOW = 16 * 1024**2  # one ranged GET per window, so no request outlives its timeout
READ_CHUNK = 256 * 1024
INCOMING = ".incoming/"
PROBE = ".taskhook-probe"
STALE_INCOMING = 3600.0
STATUS_TIMEOUT = 5.0


class S3Storage:
    """``ArchiveStorage`` in an S3-compatible bucket (AWS S3, MinIO, R2, ...).

    Credentials are kept only to hand them to the client and to scrub them
    from messages; ``repr`` shows the bucket and the endpoint, nothing else.
    """

    def __init__(
        self,
        url: BucketURL,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_size: int = PART_SIZE,
        retry_timeout: float = 60.0,
        request_timeout: float = 600.0,
        stale_after: float = STALE_INCOMING,
    ) -> None:
        self.url, self.endpoint = url, endpoint
        self.location = str(url)
        self.part_size, self.stale_after = part_size, stale_after
        self.max_file_bytes = MAX_OBJECT_BYTES
        self._secrets = tuple(s for s in (access_key_id, secret_access_key, session_token) if s)
        config: dict[str, Any] = {}
        for key, value in (
            ("endpoint", endpoint),
            ("region", region),
            ("access_key_id", access_key_id),
            ("secret_access_key", secret_access_key),
            ("session_token", session_token),
        ):
            if value:
                config[key] = value
        self._store = S3Store(
            url.bucket,
            prefix=url.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=5),
                "read_timeout": timedelta(seconds=60),
                "timeout": timedelta(seconds=request_timeout),
            },
            retry_config={
                # Bounded by time, not count: a copy rides out an outage of up to
                # ``retry_timeout``; a longer one fails it and the archive's backoff retries.
                "max_retries": 1000,
                "retry_timeout": timedelta(seconds=retry_timeout),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=200),
                    "max_backoff": timedelta(seconds=10),
                    "base": 2,
                },
            },
        )
        self._cleanup: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> S3Storage:
        """From ``ARCHIVE_URL`` and the standard ``AWS_*`` variables, read like the settings
        (the process environment, then ``.env``)."""
        env = aws_environment() if environ is None else environ

        def get(*names: str) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        return cls(
            parse_archive_url(settings.archive_url),
            endpoint=get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=get("AWS_ACCESS_KEY_ID"),
            secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.location!r}, endpoint={self.endpoint!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, *, cleanup: bool) -> None:
        """Nothing to create; with ``cleanup``, old ``.incoming/`` objects go in the
        background (a bucket that does not answer must not hold up a start)."""
        if cleanup and self._cleanup is None:
            self._cleanup = asyncio.create_task(self._cleanup_quietly(), name="s3 cleanup")

    async def close(self) -> None:
        await cancel(self._cleanup)
        self._cleanup = None

    async def status(self) -> str | None:
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                try:
                    await obstore.head_async(self._store, PROBE)
                except (NotFoundError, FileNotFoundError):
                    await obstore.put_async(self._store, PROBE, b"taskhook can write here\n")
        except TimeoutError:
            return f"{self.location} did not answer within {STATUS_TIMEOUT:g} s"
        except (BaseError, OSError) as exc:
            return f"{self.location} cannot take files: {self._describe(exc)}"
        return None

    # -- files -----------------------------------------------------------------------

    async def put(self, chunks: AsyncIterable[bytes], content_type: str) -> Stored:
        hasher, size = hashlib.sha256(), 0
        collected: list[bytes] = []
        upload: _Upload | None = None
        attributes: Any = {"Content-Type": content_type}
        try:
            async for chunk in chunks:  # the source's own errors propagate as they are
                hasher.update(chunk)
                size += len(chunk)
                if upload is None:
                    collected.append(chunk)
                    if size < self.part_size:
                        continue
                    upload = _Upload(self, attributes)  # too big to collect: stream it
                    chunk = b"".join(collected)
                    collected.clear()
                await upload.write(chunk)
            digest = hasher.hexdigest()
            if upload is not None:
                await upload.finish_as(digest)
            elif not await self.exists(digest):
                await self._call(
                    obstore.put_async(
                        self._store,
                        digest,
                        b"".join(collected),
                        attributes=attributes,
                        use_multipart=False,
                    )
                )
            return Stored(digest, size)
        except BaseException:
            if upload is not None:
                await upload.abandon()
            raise

    async def exists(self, sha256: str) -> bool:
        try:
            await self._call(obstore.head_async(self._store, check_digest(sha256)), lookup=True)
        except FileMissing:
            return False
        return True

    async def open_range(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        key = check_digest(sha256)
        if end <= start:  # nothing to read; still say whether the file is there
            if not await self.exists(key):
                raise FileMissing(f"no archived file has SHA-256 {sha256}")
            return _nothing()
        first = await self._get(key, start, min(end, start + READ_WINDOW))
        return self._windows(key, first, start + READ_WINDOW, end)

    async def delete(self, sha256: str) -> None:
        await self._call(obstore.delete_async(self._store, check_digest(sha256)))

    # -- helpers ---------------------------------------------------------------------

    async def _get(self, key: str, start: int, end: int) -> obstore.GetResult:
        return await self._call(
            obstore.get_async(self._store, key, options={"range": (start, end)}), lookup=True
        )

    async def _windows(
        self, key: str, first: obstore.GetResult, start: int, end: int
    ) -> AsyncIterator[bytes]:
        result: obstore.GetResult | None = first
        while result is not None:
            stream = result.stream(min_chunk_size=READ_CHUNK)
            while True:
                try:
                    chunk = await self._call(stream.__anext__())
                except StopAsyncIteration:
                    break
                yield bytes(chunk)
            result = (
                await self._get(key, start, min(end, start + READ_WINDOW)) if start < end else None
            )
            start += READ_WINDOW

    async def _call(self, pending: Awaitable[T], *, lookup: bool = False) -> T:
        """Await a client call, turning its errors into ours (no credential in them).

        A missing object is ``FileMissing`` for a ``lookup`` and a ``StorageError``
        otherwise (an upload's own temporary object must not vanish).
        """
        try:
            return await pending
        except (NotFoundError, FileNotFoundError) as exc:
            if lookup:
                raise FileMissing(f"not in {self.location}: {self._describe(exc)}") from None
            raise StorageError(f"{self.location} failed: {self._describe(exc)}") from None
        except (BaseError, OSError) as exc:
            raise StorageError(f"{self.location} failed: {self._describe(exc)}") from None

    def _describe(self, exc: BaseException) -> str:
        """The error's first line, cut short, with any credential value blanked."""
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    async def _delete_quietly(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (BaseError, OSError) as exc:
            log.warning("archive could not delete %s: %s", key, self._describe(exc))

    async def remove_stale_incoming(self) -> int:
        """Delete ``.incoming/`` objects a crash left (older than ``stale_after``, an hour:
        a live upload's temporary object exists only between its end and its copy)."""
        cutoff = time.time() - self.stale_after
        stale: list[str] = []
        async for batch in obstore.list(self._store, INCOMING):
            stale += [meta["path"] for meta in batch if meta["last_modified"].timestamp() <= cutoff]
        if stale:
            await self._call(obstore.delete_async(self._store, stale))
        return len(stale)

    async def _cleanup_quietly(self) -> None:
        try:
            removed = await self.remove_stale_incoming()
        except (BaseError, OSError, StorageError) as exc:
            text = exc.message if isinstance(exc, StorageError) else self._describe(exc)
            log.warning("archive could not clean %s/%s: %s", self.location, INCOMING, text)
            return
        if removed:
            log.info("archive removed %d partial upload(s) left by a crash", removed)


def aws_environment(dotenv: Path = Path(".env")) -> dict[str, str]:
    """The ``AWS_*`` variables: ``.env``'s, overridden by the process environment's."""
    merged = {**read_dotenv(dotenv), **os.environ}
    return {name: value for name, value in merged.items() if name.startswith("AWS_")}


class _Upload:
    """A multipart upload to a temporary key, copied to its digest once complete."""

    def __init__(self, storage: S3Storage, attributes: Any) -> None:
        self.storage = storage
        self.key = f"{INCOMING}{uuid.uuid4().hex}"
        self.writer: AsyncWritableFile | None = obstore.open_writer_async(
            storage._store,
            self.key,
            attributes=attributes,
            buffer_size=storage.part_size,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        self.completed = False

    async def write(self, chunk: bytes) -> None:
        assert self.writer is not None
        await self.storage._call(self.writer.write(chunk))

    async def finish_as(self, digest: str) -> None:
        """Complete the upload, copy it to ``digest`` (unless there already) and drop it."""
        writer, self.writer = self.writer, None
        assert writer is not None
        await self.storage._call(writer.close())
        self.completed = True
        if not await self.storage.exists(digest):
            await self.storage._call(obstore.copy_async(self.storage._store, self.key, digest))
        await self.storage._delete_quietly(self.key)
        self.completed = False  # nothing left to clean

    async def abandon(self) -> None:
        """After a failure: abort an unfinished upload, or delete a completed one."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with contextlib.suppress(Exception):  # best effort; a lifecycle rule is the backstop
                error = StorageError("the copy was abandoned")
                await writer.__aexit__(StorageError, error, None)  # aborts the multipart upload
        elif self.completed:
            await self.storage._delete_quietly(self.key)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator
