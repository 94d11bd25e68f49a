"""The archive downloader against a real loopback file server, and against
``httpx.MockTransport`` where a test needs a host name that must never be
connected to (the SSRF checks) or a response h11 refuses to produce."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from server.archive.download import (
    Downloaded,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    NetworkError,
    PrivateAddress,
    RefusedURL,
    TooLarge,
    TooManyRedirects,
    download,
    guess_content_type,
    redact_url,
)
from server.archive.egress import archive_client
from server.archive.folder import FolderStorage, archive_path
from server.archive.storage import StorageError
from server.core.expiry import url_expiry

from .harness import eventually

JPG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"
MP4 = random.Random(20261122).randbytes(300_000)
SECRET = "X-Tos-Signature=SECRETSIG&X-Tos-Credential=AKIDSECRET"
MAX = 1_000_000


# --- the loopback file server -------------------------------------------------------------


def file_server_app(release: asyncio.Event) -> Starlette:
    async def photo(request: Request) -> Response:
        return Response(JPG, media_type="image/jpeg")

    async def clip(request: Request) -> Response:
        return Response(MP4, media_type="video/mp4")

    async def untyped(request: Request) -> Response:
        return Response(MP4, headers={"content-type": "application/octet-stream"})

    async def redirect(request: Request) -> Response:
        hops = int(request.path_params["hops"])
        target = f"/redirect/{hops - 1}" if hops > 1 else "/files/clip.mp4"
        return RedirectResponse(target, status_code=302)

    async def to_scheme(request: Request) -> Response:
        targets = {"file": "file:///etc/passwd", "ftp": "ftp://127.0.0.1/clip.mp4"}
        return RedirectResponse(targets[request.path_params["scheme"]], status_code=302)

    async def status(request: Request) -> Response:
        return Response(b"no", status_code=int(request.path_params["code"]))

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):  # 4 MiB, chunked: no Content-Length
                yield b"z" * 65536

        return StreamingResponse(chunks(), media_type="video/mp4")

    async def slow(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first bytes"
            await release.wait()  # set only by the fixture's teardown
            yield b"rest"

        return StreamingResponse(chunks(), media_type="video/mp4")

    async def truncated(request: Request) -> Response:
        async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            headers = [(b"content-length", b"1000"), (b"content-type", b"video/mp4")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"short"})

        return app  # type: ignore[return-value]

    routes = [
        Route("/files/photo.jpg", photo),
        Route("/files/clip.mp4", clip),
        Route("/files/same-clip.mp4", clip),
        Route("/files/untyped.mp4", untyped),
        Route("/redirect/{hops:int}", redirect),
        Route("/to/{scheme}", to_scheme),
        Route("/status/{code:int}", status),
        Route("/endless", endless),
        Route("/slow.mp4", slow),
    ]
    app = Starlette(routes=routes)

    async def dispatch(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        # A raw ASGI response that sends less than it declares; Starlette's own
        # responses always send what they declare.
        if scope["type"] == "http" and scope["path"] == "/truncated.mp4":
            inner = await truncated(Request(scope, receive))
            await inner(scope, receive, send)  # type: ignore[operator]
            return
        await app(scope, receive, send)

    return dispatch  # type: ignore[return-value]


@pytest.fixture
async def server() -> AsyncIterator[str]:
    release = asyncio.Event()
    config = uvicorn.Config(
        file_server_app(release),
        host="127.0.0.1",
        port=0,  # the OS picks a free port
        lifespan="off",
        http="h11",
        ws="none",
        log_level="critical",
        timeout_graceful_shutdown=2,
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    await eventually(lambda: uv.started or task.done(), "the file server to start", within=5)
    if task.done():
        task.result()
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    release.set()
    uv.should_exit = True
    await task


def client(allow_private: bool = True) -> httpx.AsyncClient:
    return archive_client(
        allow_private=allow_private, timeout=httpx.Timeout(10.0), limits=httpx.Limits()
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with client() as http:
        yield http


def leftovers(archive_dir: Path) -> list[Path]:
    return list(archive_dir.rglob(".tmp-*"))


def stored_files(archive_dir: Path) -> list[Path]:
    return [p for p in archive_dir.rglob("*") if p.is_file()]


async def fetch(url: str, archive_dir: Path, http: httpx.AsyncClient, **kwargs) -> Downloaded:  # type: ignore[no-untyped-def]
    options = {"max_bytes": MAX} | kwargs
    return await download(url, FolderStorage(archive_dir), http=http, **options)


# --- downloads from the real server --------------------------------------------------------


async def test_downloads_image_with_digest_size_and_type(server, http, tmp_path: Path) -> None:
    got = await fetch(f"{server}/files/photo.jpg?{SECRET}", tmp_path, http)

    digest = hashlib.sha256(JPG).hexdigest()
    assert got == Downloaded(digest, len(JPG), "image/jpeg")
    assert (tmp_path / digest[:2] / digest).read_bytes() == JPG


async def test_same_bytes_from_two_urls_are_stored_once(server, http, tmp_path: Path) -> None:
    first = await fetch(f"{server}/files/clip.mp4", tmp_path, http)
    path = archive_path(tmp_path, first.sha256)
    stored = path.stat()
    second = await fetch(f"{server}/files/same-clip.mp4", tmp_path, http)

    # The second copy is dropped, not renamed over the first.
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (
        stored.st_ino,
        stored.st_mtime_ns,
    )

    assert first == second
    assert first.sha256 == hashlib.sha256(MP4).hexdigest()
    assert (first.bytes, first.content_type) == (len(MP4), "video/mp4")
    assert stored_files(tmp_path) == [path]
    assert leftovers(tmp_path) == []


async def test_meaningless_content_type_falls_back_to_extension(server, http, tmp_path) -> None:
    got = await fetch(f"{server}/files/untyped.mp4", tmp_path, http)
    assert got.content_type == "video/mp4"


async def test_one_redirect_is_followed(server, http, tmp_path: Path) -> None:
    got = await fetch(f"{server}/redirect/1", tmp_path, http)
    assert archive_path(tmp_path, got.sha256).read_bytes() == MP4


async def test_exactly_max_redirects_is_allowed(server, http, tmp_path: Path) -> None:
    got = await fetch(f"{server}/redirect/5", tmp_path, http)  # default max_redirects=5
    assert got.bytes == len(MP4)


@pytest.mark.parametrize("hops", [6, 10])
async def test_more_redirects_than_allowed_are_refused(server, http, tmp_path, hops) -> None:
    with pytest.raises(TooManyRedirects) as caught:
        await fetch(f"{server}/redirect/{hops}", tmp_path, http)
    assert caught.value.permanent
    assert stored_files(tmp_path) == []


@pytest.mark.parametrize("scheme", ["file", "ftp"])
async def test_redirect_to_other_scheme_is_refused(server, http, tmp_path, scheme) -> None:
    with pytest.raises(RefusedURL) as caught:
        await fetch(f"{server}/to/{scheme}", tmp_path, http)
    assert caught.value.permanent
    assert caught.value.url.startswith(f"{scheme}://")


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(404, True), (403, True), (410, True), (400, True), (408, False), (429, False), (500, False)],
)
async def test_http_errors_say_whether_retrying_helps(server, http, tmp_path, code, permanent):
    with pytest.raises(HTTPStatusError) as caught:
        await fetch(f"{server}/status/{code}?{SECRET}", tmp_path, http)
    assert (caught.value.status_code, caught.value.permanent) == (code, permanent)
    assert caught.value.reason == "http_status"
    assert "SECRETSIG" not in str(caught.value) and "?" not in caught.value.url
    assert stored_files(tmp_path) == []


async def test_body_over_the_cap_without_content_length_is_cut_off(server, http, tmp_path) -> None:
    with pytest.raises(TooLarge) as caught:
        await fetch(f"{server}/endless", tmp_path, http, max_bytes=200_000)
    assert caught.value.permanent
    assert stored_files(tmp_path) == []


async def test_declared_length_over_the_cap_is_refused(server, http, tmp_path: Path) -> None:
    with pytest.raises(TooLarge, match="Content-Length 300000"):
        await fetch(f"{server}/files/clip.mp4", tmp_path, http, max_bytes=1000)
    assert stored_files(tmp_path) == []


async def test_truncated_body_is_a_transient_network_error(server, http, tmp_path) -> None:
    with pytest.raises(NetworkError) as caught:
        await fetch(f"{server}/truncated.mp4", tmp_path, http)
    assert not caught.value.permanent
    assert stored_files(tmp_path) == []


async def test_whole_download_deadline(server, http, tmp_path: Path) -> None:
    with pytest.raises(DownloadTimeout) as caught:
        await fetch(f"{server}/slow.mp4?{SECRET}", tmp_path, http, timeout=0.5)
    assert not caught.value.permanent
    assert "SECRETSIG" not in str(caught.value)
    assert stored_files(tmp_path) == []


async def test_unwritable_archive_dir_is_a_storage_error(server, http, tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError) as caught:
        await fetch(f"{server}/files/photo.jpg?{SECRET}", blocker / "archive", http)
    assert (caught.value.reason, caught.value.permanent) == ("storage", False)
    assert "SECRETSIG" not in str(caught.value)


async def test_connection_refused_is_a_transient_network_error(http, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(NetworkError) as caught:
            await fetch(f"http://127.0.0.1:{port}/x.mp4?{SECRET}", tmp_path, http)
    assert not caught.value.permanent
    assert "SECRETSIG" not in str(caught.value)


async def test_loopback_literal_refused_unless_private_allowed(server, tmp_path) -> None:
    async with client(allow_private=False) as guarded:
        with pytest.raises(PrivateAddress) as caught:
            await fetch(f"{server}/files/photo.jpg", tmp_path, guarded)
    assert caught.value.permanent
    assert "ARCHIVE_ALLOW_PRIVATE=on" in str(caught.value)
    assert stored_files(tmp_path) == []


# --- a mock transport (no network at all) -------------------------------------------------


class MockUpstream:
    """Serves ``http://*.test/...``; records every request that would have hit the wire."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.requested: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requested.append(str(request.url))
        return self.routes.get(str(request.url), httpx.Response(404))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


@pytest.mark.parametrize("url", ["ftp://cdn.test/v.mp4", "file:///etc/passwd", "http:///nohost"])
async def test_non_http_urls_are_refused_before_any_request(tmp_path: Path, url: str) -> None:
    upstream = MockUpstream({})
    async with upstream.client() as client:
        with pytest.raises(RefusedURL) as caught:
            await download(f"{url}?{SECRET}", FolderStorage(tmp_path), http=client, max_bytes=MAX)
    assert upstream.requested == []
    assert caught.value.permanent
    assert "SECRETSIG" not in str(caught.value) and "?" not in caught.value.url


# --- lying servers (h11 would refuse to produce these, so the transport is mocked) ---------


class Chunks(httpx.AsyncByteStream):
    def __init__(self, count: int, size: int) -> None:
        self.count, self.size, self.sent = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.sent += 1
            yield b"y" * self.size


async def test_small_content_length_does_not_lift_the_cap(tmp_path: Path) -> None:
    body = Chunks(count=10, size=1000)
    lying = httpx.Response(200, headers={"content-length": "100"}, stream=body)
    async with MockUpstream({"http://127.0.0.1/v.mp4": lying}).client() as client:
        with pytest.raises(TooLarge):
            await download(
                "http://127.0.0.1/v.mp4", FolderStorage(tmp_path), http=client, max_bytes=5000
            )
    assert body.sent == 6  # stopped at the first chunk past the cap
    assert stored_files(tmp_path) == []


async def test_large_content_length_is_refused_before_reading_the_body(tmp_path: Path) -> None:
    body = Chunks(count=10, size=1000)
    honest = httpx.Response(200, headers={"content-length": "10000"}, stream=body)
    async with MockUpstream({"http://127.0.0.1/v.mp4": honest}).client() as client:
        with pytest.raises(TooLarge):
            await download(
                "http://127.0.0.1/v.mp4", FolderStorage(tmp_path), http=client, max_bytes=5000
            )
    assert body.sent == 0
    assert stored_files(tmp_path) == []


async def test_body_not_matching_content_length_is_not_stored(tmp_path: Path) -> None:
    lying = httpx.Response(200, headers={"content-length": "100"}, stream=Chunks(2, 1000))
    async with MockUpstream({"http://127.0.0.1/v.mp4": lying}).client() as client:
        with pytest.raises(NetworkError, match="Content-Length said 100"):
            await download(
                "http://127.0.0.1/v.mp4", FolderStorage(tmp_path), http=client, max_bytes=MAX
            )
    assert stored_files(tmp_path) == []


# --- pure helpers --------------------------------------------------------------------------


def unix(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


FINISHED = unix("2026-11-22T10:00:00Z")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("X-Tos-Date=20261122T093000Z&X-Tos-Expires=86400", unix("2026-11-23T09:30:00Z")),
        ("x-tos-date=20261122T093000Z&x-tos-expires=3600", unix("2026-11-22T10:30:00Z")),
        ("X-Amz-Date=20261122T090000Z&X-Amz-Expires=604800", unix("2026-11-29T09:00:00Z")),
        ("X-Tos-Expires=1795000000", 1795000000.0),  # absolute-looking: taken as a unix time
        ("X-Tos-Expires=3600", FINISHED + 3600),  # no signing date: count from finished_at
        ("X-Tos-Date=garbage&X-Tos-Expires=3600", FINISHED + 3600),
        ("Expires=1795000000&OSSAccessKeyId=k&Signature=s", 1795000000.0),
        ("Expires=3600", FINISHED + 86400),  # not a unix time: ignored
        ("preview=1&auth_key=1795000000-0-0-abc", FINISHED + 86400),
        ("", FINISHED + 86400),
    ],
)
def test_url_expiry(query: str, expected: float) -> None:
    url = f"https://ark-acg-cn-beijing.tos-cn-beijing.volces.com/v.mp4?{query}"
    assert url_expiry(url, FINISHED) == expected


@pytest.mark.parametrize(
    ("url", "header", "expected"),
    [
        ("https://x/a.mp4", "video/mp4; codecs=avc1", "video/mp4"),
        ("https://x/a.bin", "Image/JPEG", "image/jpeg"),
        ("https://x/a.jpg?type=.png", None, "image/jpeg"),
        ("https://x/a.webp", "application/octet-stream", "image/webp"),
        ("https://x/a", "", "application/octet-stream"),
    ],
)
def test_guess_content_type(url: str, header: str | None, expected: str) -> None:
    assert guess_content_type(url, header) == expected


def test_redact_url_drops_credentials() -> None:
    url = "https://user:pw@CDN.example:8443/v/a.mp4?X-Tos-Signature=s#frag"
    assert redact_url(url) == "https://cdn.example:8443/v/a.mp4"


def test_every_error_class_is_a_download_error() -> None:
    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    errors = list(subclasses(DownloadError))
    assert len(errors) == 7
    assert len({e.reason for e in errors}) == 7
