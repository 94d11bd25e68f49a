"""The errors taskhook answers with, and the one JSON shape they all take.

Each class carries its HTTP status and a stable machine ``code``; the message
says what was wrong and how to fix it, and never contains a secret.
"""

from __future__ import annotations

from typing import Any


class HTTPError(Exception):
    """An error that becomes an HTTP answer ``{"error": {"code", "message"}}``."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(HTTPError):
    status_code = 400
    code = "bad_request"


class NotJSONBody(BadRequest):
    code = "not_json"


class Unauthorized(HTTPError):
    status_code = 401
    code = "unauthorized"


class NotFound(HTTPError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(HTTPError):
    status_code = 405
    code = "method_not_allowed"


class BodyTooLarge(HTTPError):
    status_code = 413
    code = "body_too_large"


class Unprocessable(HTTPError):
    status_code = 422
    code = "unprocessable"


class Unavailable(HTTPError):
    status_code = 503
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape of every taskhook answer."""
    return {"error": {"code": code, "message": message}}
