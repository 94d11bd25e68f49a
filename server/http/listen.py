"""The listening sockets: bound before anything is printed, quiet when file descriptors run out.

``listen(host, port)`` binds every address ``HOST`` resolves to and raises
``ListenError`` with one line naming the setting and the fix (port in use, an
address this machine does not have, a name that does not resolve).

When the process runs out of file descriptors, asyncio's accept loop (Python
3.11) logs ``socket.accept() out of system resource`` with a traceback once per
pending connection, up to the backlog, and schedules a retry for each: about
1.3 million lines in 100 s in a test, enough to fill a disk. ``GuardedSocket``
makes the first failed ``accept()`` of a burst the only one (the next calls
report "nothing to accept" until the retry), says so in one line at most once a
second, and ``quiet_accept_errors`` drops asyncio's own line. asyncio takes the
socket off the selector for a second and then tries again, so serving resumes
by itself once descriptors are free. (uvloop, from the ``fast`` extra, does
its own accepting and is not affected.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from typing import Any

from server.http.notice import Notice
from server.observe.metrics import HTTP_REFUSED

log = logging.getLogger("taskhook.http")

_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: asyncio retries accepting one second after a failure; until then there is nothing to try.
PAUSE = 0.5
_ASYNCIO_MESSAGE = "socket.accept() out of system resource"


class ListenError(Exception):
    """The server cannot listen as configured; the message is the one line to print."""


def _fd_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


_NO_FDS = Notice(
    log,
    "out of file descriptors (limit %s): new connections wait until some close; "
    "raise the limit (ulimit -n) or lower LIMIT_CONCURRENCY",
    level=logging.ERROR,
)


class GuardedSocket(socket.socket):
    """A listening socket whose ``accept()`` ends asyncio's burst when descriptors run out."""

    _resume_at = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        now = time.monotonic()
        if now < self._resume_at:
            raise BlockingIOError(errno.EAGAIN, "paused: out of file descriptors")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                self._resume_at = now + PAUSE
                HTTP_REFUSED.labels("no_file_descriptors").inc()
                _NO_FDS.say(_fd_limit())
            raise


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Event-loop exception handler: drops the accept failure ``GuardedSocket`` already logged."""
    if context.get("message") == _ASYNCIO_MESSAGE:
        return
    loop.default_exception_handler(context)


def _free_port_near(host: str, port: int) -> int | None:
    for candidate in range(port + 1, min(port + 20, 65535) + 1):
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", candidate))
            return candidate
    return None


def listen(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Bind ``host:port`` (every address the name resolves to); ``ListenError`` says why not."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a host name"
        raise ListenError(
            f"HOST={host!r} is not an address of this machine ({reason}); set e.g. "
            "HOST=127.0.0.1 (this machine only) or HOST=0.0.0.0 (every interface)"
        ) from None
    # The protocol number matters: asyncio sets TCP_NODELAY only on sockets that say TCP,
    # and accepted sockets inherit it (without it, Nagle adds ~40 ms to every answer).
    addresses = list(dict.fromkeys((info[0], info[2], info[4]) for info in infos))
    sockets: list[socket.socket] = []
    try:
        for family, proto, address in addresses:
            sock: socket.socket = GuardedSocket(family, socket.SOCK_STREAM, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(addresses) > 1:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(_bind_problem(host, port, exc)) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        free = _free_port_near(host, port)
        fix = f"set e.g. PORT={free}" if free else "set PORT to a free port"
        return (
            f"PORT={port} is already in use on {host} (another taskhook or another program); "
            f"stop that one or {fix}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"HOST={host!r} is not an address of this machine; set e.g. HOST=127.0.0.1 "
            "(this machine only) or HOST=0.0.0.0 (every interface)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"PORT={port} needs privileges this process does not have; set e.g. PORT=8000 "
            "(and let a proxy or the platform listen on the low port)"
        )
    return f"cannot listen on HOST={host!r} PORT={port}: {exc.strerror}"
