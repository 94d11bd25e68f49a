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
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server.core.types import Status, iso_time
from server.errors import BodyTooLarge, TaskhookError
from server.observe.logs import event, redact
from server.providers import NAMES
from server.web import session
from server.web.auth import bearer_token
from server.web.responses import HTMLResponse, dump_json
from server.web.routes.body import read_limited
from server.web.routes.dashboard_views import http_url, readable, relative
from server.web.runtime import runtime

log = logging.getLogger("taskhook.dashboard")

PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = Environment(
    loader=FileSystemLoader(PACKAGE / "templates"),
    autoescape=select_autoescape(default=True),
)
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
    """``5 min ago`` / ``in 3 min``: relative times for tables (the exact time is its title)."""
    if ts is None:
        return "—"
    return relative(ts, time.time() if now is None else now)


def pretty_body(body: bytes) -> str:
    """A kept body for reading: indented when it is JSON, else its text (bad bytes replaced).

    Any character stays as sent; lone surrogates show as their ``\\udc80`` escape.
    """
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
    if len(text) > BODY_PREVIEW_CHARS:
        text = text[:BODY_PREVIEW_CHARS] + f"\n… ({len(text) - BODY_PREVIEW_CHARS} more characters)"
    return text


def pretty_json(value: Any) -> str:
    """Any stored JSON value, indented; one that cannot be written out says so instead."""
    try:
        return dump_json(value, indent=2)
    except (ValueError, TypeError, RecursionError):
        return "(this value cannot be shown as JSON)"


def pathpart(value: Any) -> str:
    """One path segment: every character escaped, ``/`` and ``.`` included.

    Dots too, because browsers drop ``.`` and ``..`` segments before sending.
    """
    return quote(str(value).encode("utf-8", "surrogatepass"), safe="").replace(".", "%2E")


TEMPLATES.filters.update(
    ago=ago,
    iso=iso_time,
    http_url=http_url,
    pathpart=pathpart,
    pretty=pretty_json,
    redact=redact,
    readable=lambda value, key="", now=None: readable(key, value, now or time.time()),
)


# -- who is asking -----------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """A signed-in operator: by cookie (``session`` set) or by bearer header (``session`` None)."""

    session: str | None

    def csrf(self, api_token: str) -> str:
        return session.csrf_token(api_token, self.session) if self.session else ""


async def viewer(request: Request) -> Viewer | None:
    """Who is asking: the bearer header, or a valid session cookie nobody signed out."""
    rt = runtime(request)
    if session.token_matches(rt.secrets.api_token, bearer_token(request)):
        return Viewer(None)
    cookie = request.cookies.get(session.COOKIE_NAME)
    if not cookie or not session.session_valid(rt.secrets.api_token, cookie, time.time()):
        return None
    if await rt.store.get_value(session.revocation_key(cookie)) is not None:
        return None
    return Viewer(cookie)


def signed_in(
    endpoint: Callable[[Request, Viewer], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page that needs a session gets its viewer passed in; anyone else goes to sign-in."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        who = await viewer(request)
        if who is None:
            return to_login(request)
        try:
            return await endpoint(request, who)
        except TaskhookError as exc:  # a bad filter, cursor or id: the page says what was wrong
            if exc.http_status >= 500:
                raise
            return error_page(request, who, exc)

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
    content = TEMPLATES.get_template(name).render(context)
    return HTMLResponse(content, status_code, headers=SECURITY_HEADERS)


def message_page(
    request: Request, who: Viewer | None, title: str, message: str, status_code: int
) -> Response:
    """The error page: a title, one message, and the status it is answered with."""
    return page(
        request, "error.html", {"viewer": who, "title": title, "message": message}, status_code
    )


def error_page(request: Request, who: Viewer | None, exc: TaskhookError) -> Response:
    """An error of ours as a page: its status, and its message as the text."""
    titles = {400: "Not understood", 404: "Not found", 409: "Conflict", 413: "Too large"}
    title = titles.get(exc.http_status, "Error")
    return message_page(request, who, title, exc.message, exc.http_status)


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
    message = "This form's security token is missing or wrong. Reload the page and try again."
    return message_page(request, who, "Form expired", message, 403)


async def operator(request: Request, change: str) -> Viewer | Response:
    """The signed-in viewer of a form post with a good CSRF token, or the page refusing it.

    ``change`` is what the form does, for the page asking to sign in ("change endpoints").
    """
    who = await viewer(request)
    if who is None:
        return message_page(request, None, "Not signed in", f"Sign in to {change}.", 401)
    if not csrf_ok(request, who, await read_form(request)):
        return forbidden(request, who)
    return who


def page_route(path: str, endpoint: Any, method: str = "GET", name: str | None = None) -> Route:
    """A dashboard route: one method (a page's GET, a form's POST), not in the API schema."""
    return Route(path, endpoint, methods=[method], name=name, include_in_schema=False)


# -- sign in and out ---------------------------------------------------------------


async def login_form(request: Request) -> Response:
    if await viewer(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return page(request, "login.html", {"next": safe_next(request.query_params.get("next"))})


def secure_cookie(request: Request) -> bool:
    """``Secure`` whenever the dashboard is reached over https.

    That is: ``PUBLIC_URL`` is https, or this request came over https, directly
    or through a proxy uvicorn trusts (``FORWARDED_ALLOW_IPS``), whose
    ``X-Forwarded-Proto`` then sets the request's scheme.
    """
    public = runtime(request).settings.base_url
    return public.lower().startswith("https://") or request.url.scheme == "https"


async def login(request: Request) -> Response:
    rt = runtime(request)
    client = _client(request)
    wait = rt.throttle.wait(client)
    if wait:
        event(log, "dashboard_login_throttled", logging.WARNING, client=client, retry_after=wait)
        response = page(
            request,
            "login.html",
            {
                "next": "/dashboard",
                "error": f"Too many wrong tries from your address. Try again in {wait} s.",
            },
            429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        form = await read_form(request)
    except BodyTooLarge:
        form = {}
    target = safe_next(form.get("next"))
    if not session.token_matches(rt.secrets.api_token, form.get("token", "").strip()):
        rt.throttle.failed(client)
        event(log, "dashboard_login_failed", logging.WARNING, client=client)
        return page(
            request,
            "login.html",
            {"next": target, "error": "That is not the API token."},
            401,
        )
    rt.throttle.succeeded(client)
    value = session.new_session(rt.secrets.api_token, time.time())
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        session.COOKIE_NAME,
        value,
        max_age=session.SESSION_MAX_AGE,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
    )
    event(log, "dashboard_login", client=client)
    return response


async def logout(request: Request) -> Response:
    """Sign out: the session is revoked in the database, so a copy of the cookie stops too."""
    who = await viewer(request)
    if who is None:
        return to_login(request)
    if not csrf_ok(request, who, await read_form(request)):
        return forbidden(request, who)
    if who.session is not None:
        store = runtime(request).store
        await store.set_value(session.revocation_key(who.session), session.expires_at(who.session))
        event(log, "dashboard_logout", client=_client(request))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(
        session.COOKIE_NAME,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
    )
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"
