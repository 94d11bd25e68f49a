"""``GET /files/{sha256}``: an archived result file, with HTTP Range support.

Archived files come from URLs anyone could have put in a callback, and they are
served on the dashboard's origin, so a file must never run as a page there:
only image, video and audio types (not SVG) keep their type; everything else is
sent as ``application/octet-stream`` to download. The served type is decided
here, from the stored type, at every request, so files archived before this
rule existed are served safely too. Every answer forbids sniffing and carries a
sandboxing Content-Security-Policy.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server.archive.download import archive_path
from server.archive.ranges import byte_ranges
from server.errors import NotFound
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.runtime import runtime

#: The name is the content's digest, so a copy never changes: cache it for good.
CACHE_CONTROL = "private, max-age=31536000, immutable"
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"
CHUNK = 64 * 1024
_MEDIA = re.compile(r"(image|video|audio)/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", re.ASCII)

#: ``read(start, end)``: the file's bytes ``[start, end)``, in chunks.
Reader = Callable[[int, int], AsyncIterator[bytes]]


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


def file_response(
    request: Request, sha256: str, stored_type: str, size: int, read: Reader
) -> Response:
    """200, 206 (one range or multipart/byteranges) or 304 for one archived file.

    Range errors raise ``BadRange`` (400) or ``RangeNotSatisfiable`` (416).
    """
    headers = file_headers(sha256, stored_type)
    if _matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=_without_body(headers))
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != headers["ETag"]:
        wanted = None  # the client holds another version: send it all
    ranges = byte_ranges(wanted, size)
    body: AsyncIterator[bytes]
    if ranges is None:
        status, length, body = 200, size, read(0, size)
    elif len(ranges) == 1:
        (start, end) = ranges[0]
        status, length, body = 206, end - start, read(start, end)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    else:
        boundary = secrets.token_hex(16)
        heads = [_part_head(boundary, headers["Content-Type"], r, size) for r in ranges]
        tail = f"--{boundary}--\r\n".encode()
        length = len(tail) + sum(
            len(h) + end - start + 2 for h, (start, end) in zip(heads, ranges, strict=True)
        )
        status, body = 206, _multipart(read, ranges, heads, tail)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
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


async def _multipart(
    read: Reader, ranges: list[tuple[int, int]], heads: list[bytes], tail: bytes
) -> AsyncIterator[bytes]:
    for head, (start, end) in zip(heads, ranges, strict=True):
        yield head
        async for chunk in read(start, end):
            yield chunk
        yield b"\r\n"
    yield tail


def folder_reader(path: Path) -> Reader:
    """Read ``[start, end)`` of a file in the archive folder, a chunk at a time."""

    async def read(start: int, end: int) -> AsyncIterator[bytes]:
        async with await anyio.open_file(path, "rb") as file:
            await file.seek(start)
            left = end - start
            while left > 0:
                chunk = await file.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    return read


@doc(
    "An archived result file (Range requests supported)",
    responses={
        200: "the file: image, video and audio types as stored, anything else as a download",
        206: "the requested byte range(s)",
        304: "the client's copy is current (If-None-Match)",
        400: "a malformed Range header",
        401: "no or wrong bearer",
        404: "no archived file has this SHA-256",
        416: "no requested range overlaps the file",
    },
    auth=True,
)
async def get_file(request: Request) -> Response:
    require_api_token(request)
    rt = runtime(request)
    digest = request.path_params["sha256"].lower()
    try:
        path = archive_path(Path(rt.settings.archive_dir), digest)
    except ValueError:
        raise NotFound(
            "an archived file is named by the lower-case hex SHA-256 of its bytes "
            "(64 characters), as in a result's archived.url"
        ) from None
    found = await rt.store.archived_file(digest)
    if found is None or not path.is_file():
        raise NotFound(f"no archived file has SHA-256 {digest}")
    content_type, _size = found
    size = path.stat().st_size
    return file_response(request, digest, content_type, size, folder_reader(path))


ROUTES = [Route("/files/{sha256}", get_file, methods=["GET"], name="file")]
