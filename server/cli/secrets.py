"""``python -m server secrets show|rotate-callback``: the secrets, on purpose.

``show`` prints ``API_TOKEN=…`` and ``CALLBACK_SECRETS=…`` as in effect (the
environment wins over the database; stderr says which came from where).
``rotate-callback`` puts a new callback secret first in the database, keeps
the old ones (URLs handed out before keep working) and prints the new
callback URLs; running servers on the same database accept them within
seconds. It refuses (exit 2) when ``CALLBACK_SECRETS`` comes from the
environment: then the variable is what to change.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from server.cli import EXIT_OK
from server.core.tokens import callback_url
from server.providers import PROVIDERS
from server.secrets import load_secrets, rotate_callback
from server.settings import Settings
from server.store import open_store


def add_parser(commands: Any) -> None:
    p = commands.add_parser("secrets", help="show the secrets, or rotate the callback secret")
    actions = p.add_subparsers(dest="secrets_action", metavar="ACTION", required=True)
    actions.add_parser("show", help="print API_TOKEN=… and CALLBACK_SECRETS=…")
    actions.add_parser(
        "rotate-callback",
        help="add a new first callback secret (old ones keep working); print the new URLs",
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.secrets_action == "show":
        return await show(settings)
    return await rotate(settings)


async def show(settings: Settings) -> int:
    async with open_store(settings) as store:
        secrets = await load_secrets(store, settings)
    for name, configured in (
        ("API_TOKEN", settings.api_token),
        ("CALLBACK_SECRETS", settings.callback_secrets),
    ):
        where = "the environment" if configured else "the database"
        print(f"{name} comes from {where}", file=sys.stderr)
    print(f"API_TOKEN={secrets.api_token}")
    print(f"CALLBACK_SECRETS={','.join(secrets.callback_secrets)}")
    return EXIT_OK


async def rotate(settings: Settings) -> int:
    async with open_store(settings) as store:
        secrets = await rotate_callback(store, settings)  # ConfigError -> exit 2 in main
    print(
        f"a new callback secret is first of {len(secrets)}; URLs handed out before keep working. "
        "Running servers on this database accept the new URLs within seconds.",
        file=sys.stderr,
    )
    print("Callback URLs to pass as callback_url from now on:")
    for provider in PROVIDERS:
        print(f"  {provider:<10} {callback_url(settings.base_url, secrets[0], provider)}")
    return EXIT_OK
