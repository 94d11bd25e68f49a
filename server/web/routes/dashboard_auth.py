"""The dashboard's sign-in, session checks and page rendering.

Sign-in sets an HttpOnly, SameSite=Strict cookie holding an HMAC-derived
session (``server.web.session``), never the token. A bearer header works too (for
curl). Every form that changes something carries the session's CSRF token.
Templates autoescape everything; the Content-Security-Policy forbids scripts.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from server.core.types import Status, iso_time
from server.errors import BodyTooLarge
from server.observe.logs import event
from server.providers import NAMES
from server.web import session
from server.web.auth import bearer_token
from server.web.routes.body import read_limited
from server.web.runtime import runtime

log = logging.getLogger("taskhook.dashboard")

PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(PACKAGE / "templates"))
STYLESHEET = PACKAGE / "static" / "dashboard.css"

PAGE_SIZE = 50
FORM_LIMIT = 8 * 1024
BODY_PREVIEW_CHARS = 20_000
SECURITY_HEADERS = {
    # No script at all: autoescaping plus this makes injected markup inert.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# -- template helpers -----------------------------------------------------------


def ago(ts: float | None, now: float | None = None) -> str:
    """``5m ago`` / ``in 3m``: short relative times for tables."""
    if ts is None:
        return "—"
    delta = (now or time.time()) - ts
    span = abs(delta)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if span >= size:
            text = f"{int(span // size)}{unit}"
            break
    else:
        text = f"{int(span)}s"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def http_url(url: Any) -> str | None:
    """``url`` when it is http(s), else None: a callback body must not plant javascript: links."""
    if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def pretty_body(body: bytes) -> str:
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
    if len(text) > BODY_PREVIEW_CHARS:
        text = text[:BODY_PREVIEW_CHARS] + f"\n… ({len(text) - BODY_PREVIEW_CHARS} more characters)"
    return text


TEMPLATES.env.filters.update(
    ago=ago,
    iso=iso_time,
    http_url=http_url,
    pathpart=lambda value: quote(str(value), safe=""),
)


# -- who is asking -----------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """A signed-in operator: by cookie (``session`` set) or by bearer header (``session`` None)."""

    session: str | None

    def csrf(self, api_token: str) -> str:
        return session.csrf_token(api_token, self.session) if self.session else ""


def viewer(request: Request) -> Viewer | None:
    api_token = runtime(request).secrets.api_token
    if session.token_matches(api_token, bearer_token(request)):
        return Viewer(None)
    cookie = request.cookies.get(session.COOKIE_NAME)
    if session.session_valid(api_token, cookie, time.time()):
        return Viewer(cookie)
    return None


def signed_in(
    endpoint: Callable[[Request, Viewer], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page that needs a session gets its viewer passed in; anyone else goes to sign-in."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        return await endpoint(request, who)

    return guarded


def safe_next(target: str | None) -> str:
    """Only a dashboard path may be a redirect target (no open redirect)."""
    if target and target.startswith("/dashboard") and "//" not in target and "\\" not in target:
        return target
    return "/dashboard"


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/login?{urlencode({'next': here})}", status_code=303)


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    rt = runtime(request)
    who: Viewer | None = context.get("viewer")
    context = {
        "providers": NAMES,
        "statuses": [s.value for s in Status],
        "csrf": who.csrf(rt.secrets.api_token) if who else "",
        "now": time.time(),
        **context,
    }
    response = TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (no python-multipart needed for one or two fields)."""
    body = await read_limited(request, FORM_LIMIT)
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def csrf_ok(request: Request, who: Viewer, form: dict[str, str]) -> bool:
    """Cookie sessions must echo their CSRF token; a bearer header cannot be forged cross-site."""
    if who.session is None:
        return True
    return session.csrf_valid(runtime(request).secrets.api_token, who.session, form.get("csrf"))


def forbidden(request: Request, who: Viewer) -> Response:
    return page(
        request,
        "error.html",
        {
            "viewer": who,
            "title": "Form expired",
            "message": "This form's security token is missing or wrong. Reload the page and "
            "try again.",
        },
        403,
    )


# -- sign in and out ---------------------------------------------------------------


async def login_form(request: Request) -> Response:
    if viewer(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return page(request, "login.html", {"next": safe_next(request.query_params.get("next"))})


async def login(request: Request) -> Response:
    rt = runtime(request)
    try:
        form = await read_form(request)
    except BodyTooLarge:
        form = {}
    target = safe_next(form.get("next"))
    if not session.token_matches(rt.secrets.api_token, form.get("token", "").strip()):
        event(log, "dashboard_login_failed", logging.WARNING, client=_client(request))
        return page(
            request,
            "login.html",
            {"next": target, "error": "That is not the API token."},
            401,
        )
    value = session.new_session(rt.secrets.api_token, time.time())
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        session.COOKIE_NAME,
        value,
        max_age=session.SESSION_MAX_AGE,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    event(log, "dashboard_login", client=_client(request))
    return response


async def logout(request: Request) -> Response:
    who = viewer(request)
    if who is None:
        return to_login(request)
    if not csrf_ok(request, who, await read_form(request)):
        return forbidden(request, who)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(session.COOKIE_NAME, path="/dashboard")
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"
