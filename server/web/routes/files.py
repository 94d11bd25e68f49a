"""``GET /files/{sha256}``: an archived result file, with HTTP Range support.

Archived files come from URLs anyone could have put in a callback, and they are
served on the dashboard's origin, so a file must never run as a page there:
only image, video and audio types (not SVG) keep their type; everything else is
sent as ``application/octet-stream`` to download. The served type is decided
here, from the stored type, at every request, so files archived before this
rule existed are served safely too. Every answer forbids sniffing and carries a
sandboxing Content-Security-Policy.

The bytes come from the archive's storage (a folder or a bucket, whichever is
configured), streamed, never whole in memory.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server.archive.ranges import byte_ranges
from server.archive.storage import SHA256_HEX, FileMissing
from server.errors import NotFound
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.runtime import runtime

#: The name is the content's digest, so a copy never changes: cache it for good.
CACHE_CONTROL = "private, max-age=31536000, immutable"
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"
_MEDIA = re.compile(r"(image|video|audio)/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", re.ASCII)

#: ``await read(start, end)``: the file's bytes ``[start, end)``, in chunks
#: (``ArchiveStorage.open_range`` bound to one file).
Reader = Callable[[int, int], Awaitable[AsyncIterator[bytes]]]


def served_type(stored: str) -> tuple[str, bool]:
    """(the Content-Type to send, whether to force a download) for a stored type."""
    media = stored.split(";", 1)[0].strip().lower()
    if _MEDIA.fullmatch(media) and "svg" not in media and not media.endswith("xml"):
        return media, False
    return "application/octet-stream", True


def file_headers(sha256: str, stored_type: str) -> dict[str, str]:
    """Headers every answer for an archived file carries, whatever its status."""
    media, download = served_type(stored_type)
    headers = {
        "Content-Type": media,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "ETag": f'"{sha256}"',
    }
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{sha256}"'
    return headers


async def file_response(
    request: Request, sha256: str, stored_type: str, size: int, read: Reader
) -> Response:
    """200, 206 (one range or multipart/byteranges) or 304 for one archived file.

    Range errors raise ``BadRange`` (400) or ``RangeNotSatisfiable`` (416). The
    first range is opened before any header is sent, so a file missing from the
    storage still raises ``FileMissing`` in time for a clean 404.
    """
    headers = file_headers(sha256, stored_type)
    if _matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=_without_body(headers))
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != headers["ETag"]:
        wanted = None  # the client holds another version: send it all
    ranges = byte_ranges(wanted, size)
    parts = [(0, size)] if ranges is None else ranges
    status = 200 if ranges is None else 206
    heads: list[bytes] = []
    tail = b""
    if len(parts) == 1:
        (start, end) = parts[0]
        length = end - start
        if ranges is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    else:
        boundary = secrets.token_hex(16)
        heads = [_part_head(boundary, headers["Content-Type"], part, size) for part in parts]
        tail = f"--{boundary}--\r\n".encode()
        length = len(tail) + sum(len(h) + e - s + 2 for h, (s, e) in zip(heads, parts, strict=True))
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    headers["Content-Length"] = str(length)
    first = await read(*parts[0])
    if request.method == "HEAD":
        await _close(first)
        return Response(status_code=status, headers=headers)
    if len(parts) == 1:
        return StreamingResponse(first, status_code=status, headers=headers)
    body = _multipart(first, read, parts, heads, tail)
    return StreamingResponse(body, status_code=status, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _without_body(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in ("Content-Type", "Content-Disposition")}


def _part_head(boundary: str, media: str, part: tuple[int, int], size: int) -> bytes:
    start, end = part
    return (
        f"--{boundary}\r\nContent-Type: {media}\r\n"
        f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
    ).encode()


async def _close(body: AsyncIterator[bytes]) -> None:
    closing = getattr(body, "aclose", None)
    if closing is not None:
        await closing()


async def _multipart(
    first: AsyncIterator[bytes],
    read: Reader,
    parts: list[tuple[int, int]],
    heads: list[bytes],
    tail: bytes,
) -> AsyncIterator[bytes]:
    for index, (head, (start, end)) in enumerate(zip(heads, parts, strict=True)):
        yield head
        async for chunk in first if index == 0 else await read(start, end):
            yield chunk
        yield b"\r\n"
    yield tail


@doc(
    "An archived result file (Range requests supported)",
    responses={
        200: "the file: image, video and audio types as stored, anything else as a download",
        206: "the requested byte range(s)",
        304: "the client's copy is current (If-None-Match)",
        400: "a malformed Range header",
        404: "no archived file has this SHA-256",
        416: "no requested range overlaps the file",
    },
    auth=True,
)
async def get_file(request: Request) -> Response:
    require_api_token(request)
    rt = runtime(request)
    digest = request.path_params["sha256"].lower()
    if not SHA256_HEX.fullmatch(digest):
        raise NotFound(
            "an archived file is named by the lower-case hex SHA-256 of its bytes "
            "(64 characters), as in a result's archived.url"
        )
    found = await rt.store.archived_file(digest)
    if found is None:
        raise NotFound(f"no archived file has SHA-256 {digest}")
    content_type, size = found
    storage = rt.archive_storage
    assert storage is not None, "the app's lifespan opens the archive storage"

    async def read(start: int, end: int) -> AsyncIterator[bytes]:
        return await storage.open_range(digest, start, end)

    try:
        return await file_response(request, digest, content_type, size, read)
    except FileMissing:
        raise NotFound(
            f"the archive records SHA-256 {digest}, but {storage.location} does not hold it"
        ) from None


ROUTES = [Route("/files/{sha256}", get_file, methods=["GET"], name="file")]
