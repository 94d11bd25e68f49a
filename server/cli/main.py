"""``python -m server``: serve, reconcile, check, callback-url, archive, copy-db.

Exit codes: 0 done, 1 the work ran but something failed, 2 usage or
configuration error (the message says the remedy).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, copy_db
from server.cli import backup as backup_cli
from server.cli import endpoint as endpoint_cli
from server.cli import prune as prune_cli
from server.cli import reconcile as reconcile_cli
from server.cli import secrets as secrets_cli
from server.cli.database import database_problem
from server.core.tokens import callback_url
from server.errors import ConfigError
from server.observe import logs
from server.providers import NAMES
from server.secrets import load_secrets
from server.settings import Settings
from server.store import open_store


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the web server with the embedded reconciler (default)")
    commands.add_parser("check", help="exit 0 when the database is reachable and writable")
    reconcile_cli.add_parser(commands)
    url = commands.add_parser("callback-url", help="print the callback_url to give a provider")
    url.add_argument("provider", choices=NAMES)
    archive = commands.add_parser("archive", help="copy every result file still missing, now")
    archive.add_argument(
        "--retry-failed", action="store_true", help="also try again copies that failed for good"
    )
    secrets_cli.add_parser(commands)
    backup_cli.add_parser(commands)
    prune_cli.add_parser(commands)
    copy_db.add_parser(commands)
    endpoint_cli.add_parser(commands)
    return p


async def check(settings: Settings) -> int:
    problem = await database_problem(settings)
    if problem is not None:
        print(f"not ok: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(f"ok: database {settings.database_label} is reachable and writable")
    return EXIT_OK


async def print_callback_url(settings: Settings, provider: str) -> int:
    async with open_store(settings) as store:
        secrets = await load_secrets(store, settings)
    if secrets.generated:
        from server.startup import banner

        print(banner(settings, secrets), file=sys.stderr)
    print(callback_url(settings.base_url, secrets.callback_secrets[0], provider))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return run(settings, args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(settings: Settings, args: argparse.Namespace) -> int:
    command = args.command or "serve"
    if command == "serve":
        from server.cli.serve import serve

        return serve(settings)
    if command == "check":
        return asyncio.run(check(settings))
    if command == "reconcile":
        logs.configure(settings.log_format)
        return asyncio.run(reconcile_cli.reconcile(settings, args))
    if command == "callback-url":
        return asyncio.run(print_callback_url(settings, args.provider))
    if command == "archive":
        from server.cli import archive as archive_command

        return asyncio.run(archive_command.run(settings, retry_failed=args.retry_failed))
    if command == "prune":
        return asyncio.run(prune_cli.run(settings))
    if command == "backup":
        return backup_cli.run(settings, args.path)
    if command == "secrets":
        return asyncio.run(secrets_cli.run(settings, args))
    if command == "copy-db":
        return copy_db.run(settings, args.to)
    if command == "endpoint":
        return asyncio.run(endpoint_cli.run(settings, args))
    return EXIT_USAGE
