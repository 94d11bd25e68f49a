"""``GET /files/{sha256}``: safe types (no stored XSS), byte ranges and their errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scripts.fake_upstream import serving
from server.archive.ranges import BadRange, RangeNotSatisfiable, byte_ranges
from server.web.routes.files import served_type

from .archive_files import FileServer, content, digest
from .conftest import callback_path, serve_app
from .harness import API_TOKEN, eventually
from .payloads import dumps, seedance

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CSP = "default-src 'none'; sandbox"


@pytest.fixture
async def archive(settings) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    files = FileServer()
    archive_on = replace(settings, archive=True, archive_allow_private=True)
    async with serving(files.app()) as base, serve_app(archive_on, **AUTH) as client:
        yield client, base


async def archived(client: httpx.AsyncClient, base: str, name: str) -> dict:
    """Send a callback whose result is ``name`` on the file server; wait for its copy."""
    body = seedance(str(uuid.uuid4()))
    body["data"]["video_url"] = f"{base}/f/{name}"
    answer = await client.post(callback_path("seedance"), content=dumps(body))
    task_id = answer.json()["task_id"]

    async def copy() -> dict | None:
        result = (await client.get(f"/tasks/{task_id}")).json()["results"][0]
        return result.get("archived")

    return await eventually(copy, f"the copy of {name}")


# -- stored XSS: the served type -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("page.html", "text/html"),
        ("logo.svg", "image/svg+xml"),
        ("feed.xml", "application/xml"),
        ("notes.txt", "text/plain"),
        ("blob.bin", "application/octet-stream"),
    ],
)
async def test_anything_but_media_is_served_as_a_download(archive, name, stored):
    client, base = archive
    copy = await archived(client, base, name)
    assert copy["content_type"] == stored  # what the origin said is kept...

    served = await client.get(copy["url"])  # ...and decided on at every request
    assert served.status_code == 200 and served.content == content(name)
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == f'attachment; filename="{digest(name)}"'
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == CSP


@pytest.mark.parametrize(
    ("name", "media"),
    [("photo.png", "image/png"), ("clip.mp4", "video/mp4"), ("song.mp3", "audio/mpeg")],
)
async def test_images_videos_and_audio_keep_their_type(archive, name, media):
    client, base = archive
    copy = await archived(client, base, name)
    served = await client.get(copy["url"])
    assert served.headers["content-type"] == media
    assert "content-disposition" not in served.headers
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == CSP


async def test_the_dashboard_link_serves_the_same_safe_headers(archive):
    client, base = archive
    copy = await archived(client, base, "page.html")
    login = await client.post(
        "/dashboard/login", data={"token": API_TOKEN}, headers={"Authorization": ""}
    )
    assert login.status_code in (200, 303)
    served = await client.get(f"/dashboard/files/{copy['sha256']}", headers={"Authorization": ""})
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"].startswith("attachment")
    assert served.headers["content-security-policy"] == CSP


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ("image/jpeg", ("image/jpeg", False)),
        ("IMAGE/WEBP", ("image/webp", False)),
        ("video/mp4; codecs=avc1", ("video/mp4", False)),
        ("audio/wav", ("audio/wav", False)),
        ("image/svg+xml", ("application/octet-stream", True)),
        ("image/svg", ("application/octet-stream", True)),
        ("video/vnd.something+xml", ("application/octet-stream", True)),
        ("text/html", ("application/octet-stream", True)),
        ("application/xhtml+xml", ("application/octet-stream", True)),
        ("application/pdf", ("application/octet-stream", True)),
        ("image/", ("application/octet-stream", True)),
        ("image/png\r\nX-Evil: 1", ("application/octet-stream", True)),
        ("", ("application/octet-stream", True)),
    ],
)
def test_served_type(stored, served):
    assert served_type(stored) == served


# -- byte ranges -----------------------------------------------------------------------


async def test_ranges_single_multiple_head_and_conditional(archive):
    client, base = archive
    copy = await archived(client, base, "r.mp4")
    url, body, size = copy["url"], content("r.mp4"), 20_000

    part = await client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.headers["content-length"] == "100"

    tail = await client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == body[-10:]
    past_end = await client.get(url, headers={"Range": "bytes=19990-30000"})
    assert past_end.content == body[19990:]

    two = await client.get(url, headers={"Range": "bytes=0-9, 50-59"})
    assert two.status_code == 206
    boundary = two.headers["content-type"].split("boundary=")[1]
    assert two.headers["content-type"].startswith("multipart/byteranges")
    assert int(two.headers["content-length"]) == len(two.content)
    pieces = two.content.split(f"--{boundary}".encode())
    assert (
        b"Content-Range: bytes 0-9/20000\r\n\r\n" + body[0:10] + b"\r\n"
        == pieces[1].split(b"video/mp4\r\n", 1)[1]
    )
    assert pieces[2].endswith(b"Content-Range: bytes 50-59/20000\r\n\r\n" + body[50:60] + b"\r\n")
    assert pieces[3] == b"--\r\n"

    head = await client.head(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-length"] == "100"

    etag = part.headers["etag"]
    assert etag == f'"{copy["sha256"]}"'
    same = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206
    other = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert other.status_code == 200 and other.content == body
    cached = await client.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag

    other_unit = await client.get(url, headers={"Range": "items=0-1"})
    assert other_unit.status_code == 200 and other_unit.content == body


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=abc", "bytes=", "bytes=1-2-3", "0-10"])
async def test_a_malformed_range_is_400_in_the_error_shape(archive, header):
    client, base = archive
    copy = await archived(client, base, "bad.mp4")
    answer = await client.get(copy["url"], headers={"Range": header})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_range"
    assert set(answer.json()) == {"error"} and answer.json()["error"]["message"]


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=99999-100000", "bytes=-0"])
async def test_an_unsatisfiable_range_is_416_in_the_error_shape(archive, header):
    client, base = archive
    copy = await archived(client, base, "far.mp4")
    answer = await client.get(copy["url"], headers={"Range": header})
    assert answer.status_code == 416
    assert answer.headers["content-range"] == "bytes */20000"
    assert answer.json()["error"]["code"] == "range_not_satisfiable"


def test_too_many_ranges_are_refused():
    many = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
    with pytest.raises(BadRange, match="17 ranges"):
        byte_ranges(many, 1000)
    assert byte_ranges(many.rsplit(",", 1)[0], 1000) is not None


def test_an_empty_file_satisfies_no_range():
    with pytest.raises(RangeNotSatisfiable):
        byte_ranges("bytes=-5", 0)
    assert byte_ranges(None, 0) is None


specs = st.one_of(
    st.tuples(st.integers(0, 300), st.integers(0, 300)).map(lambda p: f"{min(p)}-{max(p)}"),
    st.integers(0, 300).map(lambda n: f"{n}-"),
    st.integers(0, 300).map(lambda n: f"-{n}"),
)


@given(size=st.integers(0, 250), parts=st.lists(specs, min_size=1, max_size=16))
def test_ranges_cover_exactly_the_bytes_asked_for(size, parts):
    header = "bytes=" + ", ".join(parts)
    asked: set[int] = set()
    for part in parts:
        first, last = part.split("-")
        if first == "":
            asked.update(range(max(0, size - int(last)), size) if int(last) else ())
        else:
            asked.update(range(int(first), min(size, int(last) + 1 if last else size)))
    if not asked:
        with pytest.raises(RangeNotSatisfiable):
            byte_ranges(header, size)
        return
    ranges = byte_ranges(header, size)
    assert ranges is not None
    covered = [i for start, end in ranges for i in range(start, end)]
    assert covered == sorted(asked)  # in order, each byte once, nothing extra
    assert all(a[1] < b[0] for a, b in pairwise(ranges))  # merged when touching
