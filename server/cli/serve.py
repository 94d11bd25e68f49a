"""``python -m server serve``: the web server, started so that a bad start says one line.

Before anything is printed, the database is opened and written once and the
listening sockets are bound. Either failure prints one line naming the
setting and the fix and exits 2 (no banner, no traceback, no "startup
complete"). Then uvicorn serves on those sockets with protocols that cut off
slow clients (``HEADER_TIMEOUT``, ``BODY_TIMEOUT``), trusts forwarded headers
from ``FORWARDED_ALLOW_IPS``, and shuts down gracefully within 20 s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from server.cli import EXIT_OK, EXIT_USAGE
from server.cli.database import database_problem
from server.http.listen import ListenError, listen, quiet_accept_errors
from server.http.protocol import protocol_class
from server.observe import logs
from server.settings import Settings

log = logging.getLogger("taskhook.app")

GRACEFUL_SHUTDOWN = 20


def fail(message: str) -> int:
    print(f"taskhook cannot start: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def serve(settings: Settings) -> int:
    problem = asyncio.run(database_problem(settings))
    if problem is not None:
        return fail(problem)
    try:
        sockets = listen(settings.host, settings.port)
    except ListenError as exc:
        return fail(str(exc))

    from server.web.app import create_app  # after the checks: importing it prints nothing

    logs.configure(settings.log_format)
    config = uvicorn.Config(
        create_app(settings),
        http=protocol_class(settings.header_timeout, settings.body_timeout),
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = uvicorn.Server(config)
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve(server, sockets, settings))
    except SystemExit as exc:  # uvicorn exits when the application's start-up failed
        if not server.started:
            return fail(f"the application did not start (exit {exc.code}); see the lines above")
        raise
    finally:
        for sock in sockets:
            sock.close()
    return EXIT_OK if server.started else EXIT_USAGE


async def _serve(server: uvicorn.Server, sockets: list[socket.socket], settings: Settings) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_accept_errors)
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("taskhook listening on http://%s:%d", shown, port)
    await server.serve(sockets=sockets)
