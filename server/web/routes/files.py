"""``GET /files/{sha256}``: an archived result file, with HTTP Range support."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from server.archive.download import archive_path
from server.errors import NotFound
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.runtime import runtime

#: The name is the content's digest, so a copy never changes: cache it for good.
CACHE_CONTROL = "private, max-age=31536000, immutable"


@doc(
    "An archived result file (Range requests supported)",
    responses={
        200: "the file, with its content type",
        206: "the requested byte range",
        401: "no or wrong bearer",
        404: "no archived file has this SHA-256",
        416: "the range lies outside the file",
    },
    auth=True,
)
async def get_file(request: Request) -> FileResponse:
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
    return FileResponse(path, media_type=content_type, headers={"Cache-Control": CACHE_CONTROL})


ROUTES = [Route("/files/{sha256}", get_file, methods=["GET"], name="file")]
