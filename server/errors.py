"""Every error taskhook raises on purpose, as one tree, and the one JSON shape they take.

::

    TaskhookError                      http_status 500, code "internal_error"
    ├── ConfigError                    a setting we cannot use (commands exit 2)
    ├── ParseError                     a delivery we cannot merge
    │   ├── NotJSON                    400 not_json
    │   └── NoTaskId                   422 no_task_id
    ├── UpstreamError                  a provider call gave no usable answer
    │   (kinds in server.providers.upstream: Unauthorized, RateLimited,
    │    ServerError, UpstreamTimeout, ConnectionFailed, BadAnswer, Rejected)
    │   (a creation call's, in server.providers.creation: CreationRejected 400,
    │    CreationRateLimited 429, CreationFailed 502, OutcomeUnknown 504)
    ├── ArchiveError                   a copy of a result file failed
    │   (kinds in server.archive.download)
    ├── StoreError                     the store could not do what was asked
    │   ├── StoreClosed                the store was closed (shutting down)
    │   ├── SchemaTooNew               the database was written by a newer taskhook
    │   ├── StoreUnavailable           503: the database cannot be used right now
    │   ├── Overloaded                 503: too much waiting to be written; retry later
    │   ├── StorageFull                503: the disk is full
    │   ├── ProviderMismatch           409: the task is held under another provider
    │   └── BadCursor                  400: a cursor we did not hand out
    └── HTTPError                      an answer decided by a route
        ├── BadRequest (400), NotJSONBody (400), Unauthorized (401),
        ├── NotFound (404), MethodNotAllowed (405), Conflict (409),
        └── BodyTooLarge (413), Unprocessable (422), Unavailable (503)

Each class says, as class attributes, the HTTP status it becomes (``http_status``),
its stable machine ``code`` and, where several errors compete for one report,
its ``priority`` (the highest is the one reported). The first two are given in the
class line: ``class NotFound(HTTPError, status=404, code="not_found")``. Messages say what was
attempted, the bad value and the fix, and never contain a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar


class TaskhookError(Exception):
    """The root of every error taskhook raises on purpose."""

    http_status: int = 500
    code: str = "internal_error"
    #: Which error wins when several are reported as one (higher wins).
    priority: int = 0

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        """``class NotFound(HTTPError, status=404, code="not_found")`` sets both attributes."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.http_status = status
        if code is not None:
            cls.code = code

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """This error as the one JSON error shape."""
        return error_body(self.code, self.message)


E = TypeVar("E", bound=TaskhookError)


def worst(errors: Iterable[E]) -> E:
    """The error to report when several happened: highest ``priority``, first on ties."""
    chosen: E | None = None
    for error in errors:
        if chosen is None or error.priority > chosen.priority:
            chosen = error
    if chosen is None:
        raise ValueError("worst() needs at least one error")
    return chosen


# -- configuration ---------------------------------------------------------------------


class ConfigError(TaskhookError, ValueError, code="config_error"):
    """A setting has a value we cannot use; the message names it and the fix."""


# -- parsing ---------------------------------------------------------------------------


class ParseError(TaskhookError, status=400, code="parse_error"):
    """A delivery we cannot merge; ``message`` tells the sender what was wrong."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class NotJSON(ParseError, status=400, code="not_json"):
    """The body is not JSON we accept (includes NaN, Infinity, overflowing numbers)."""


class NoTaskId(ParseError, status=422, code="no_task_id"):
    """The body is JSON but names no task we can recognise."""


# -- upstream --------------------------------------------------------------------------


class UpstreamError(TaskhookError, status=502, code="upstream_error"):
    """A call to a provider did not give an answer we can use.

    ``upstream_status`` is the HTTP status upstream answered (None when it did not
    answer) and ``upstream_code`` the error code in its body, if any. ``kind`` is
    the label used in metrics and reports.
    """

    kind = "error"

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.upstream_status = status_code
        self.upstream_code = code

    @property
    def status_code(self) -> int | None:
        """Upstream's HTTP status (kept under its old name for callers)."""
        return self.upstream_status


# -- archive ---------------------------------------------------------------------------


class ArchiveError(TaskhookError, code="archive_failed"):
    """A copy of a result file failed; ``permanent`` says a retry cannot help."""

    reason = "download_failed"
    permanent = False


# -- store -----------------------------------------------------------------------------


class StoreError(TaskhookError, status=503, code="store_unavailable"):
    """The store could not do what was asked."""


class StoreClosed(StoreError, code="shutting_down"):
    """The store was used after ``close()`` (the process is shutting down)."""


class SchemaTooNew(StoreError, code="schema_too_new"):
    """The database was migrated by a newer taskhook than this one."""


class StoreUnavailable(StoreError, code="store_unavailable"):
    """The database cannot be used right now (lost connection, dead writer)."""


class Overloaded(StoreError, code="overloaded"):
    """More is waiting to be written than the store accepts; retry after a moment."""


class StorageFull(StoreError, code="storage_full"):
    """The disk under the database is full."""


class ProviderMismatch(StoreError, status=409, code="provider_mismatch"):
    """A delivery names a task that is held under another provider."""


class BadCursor(StoreError, status=400, code="invalid_cursor"):
    """A pagination cursor that this store did not hand out."""


# -- HTTP ------------------------------------------------------------------------------


class HTTPError(TaskhookError):
    """An error a route decides to answer with ``{"error": {"code", "message"}}``."""


class BadRequest(HTTPError, status=400, code="bad_request"):
    """The request cannot be acted on as sent."""


class NotJSONBody(BadRequest, code="not_json"):
    """The request body is not the JSON the route expects."""


class Unauthorized(HTTPError, status=401, code="unauthorized"):
    """No credentials, or credentials we do not accept."""


class NotFound(HTTPError, status=404, code="not_found"):
    """Nothing is held under that name."""


class MethodNotAllowed(HTTPError, status=405, code="method_not_allowed"):
    """The path exists but not for that method."""


class Conflict(HTTPError, status=409, code="conflict"):
    """The request contradicts what is held."""


class BodyTooLarge(HTTPError, status=413, code="body_too_large"):
    """The body is larger than the route accepts."""


class Unprocessable(HTTPError, status=422, code="unprocessable"):
    """The body is well formed but its content cannot be used."""


class TooManyRequests(HTTPError, status=429, code="too_many_requests"):
    """Too many requests in a short time; retry after a moment."""


class Unavailable(HTTPError, status=503, code="unavailable"):
    """taskhook cannot answer this right now; retry after a moment."""


#: The code of an HTTP status that no class of ours raised (Starlette's own 404/405).
HTTP_STATUS_CODES: dict[int, str] = {
    cls.http_status: cls.code
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        Conflict,
        BodyTooLarge,
        Unprocessable,
        TooManyRequests,
        Unavailable,
    )
}


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape of every taskhook answer."""
    return {"error": {"code": code, "message": message}}
