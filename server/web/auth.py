"""The API bearer token check shared by every authenticated route."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from server.errors import Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def require_api_token(request: Request) -> None:
    """Raise 401 unless the request carries the API token; runs before any lookup."""
    expected = request.app.state.taskhook.secrets.api_token
    given = bearer_token(request)
    if given is None:
        raise Unauthorized(
            "this route needs 'Authorization: Bearer <API_TOKEN>'", headers=_CHALLENGE
        )
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        raise Unauthorized("the bearer token is not the API token", headers=_CHALLENGE)
