"""``python -m server endpoint add|list|remove``: manage webhook endpoints from a shell.

``add`` prints the new endpoint's signing secret once (the API shows it only in
its 201 too). Exit codes: 0 done, 1 no such endpoint, 2 a usage or
configuration error (a URL or event type that cannot be used).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from server.core.decide import EVENT_TYPES
from server.core.types import iso_time
from server.delivery import signing
from server.delivery.endpoints import InvalidEndpoint, check_events, check_url, parse_types
from server.settings import Settings
from server.store import open_store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("endpoint", help="add, list or remove webhook endpoints")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an endpoint; prints its signing secret once")
    add.add_argument("url", help="http(s)://host[:port][/path] that events are POSTed to")
    add.add_argument(
        "--events",
        metavar="T,...",
        help=f"only these event types (default: every type): {', '.join(EVENT_TYPES)}",
    )
    add.add_argument("--description", help="a note for operators")
    actions.add_parser("list", help="every endpoint, with what waits for it")
    remove = actions.add_parser("remove", help="remove an endpoint with its pending events")
    remove.add_argument("endpoint_id", metavar="ID")


async def run(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.action == "add":
        try:
            url = check_url(args.url)
            events = check_events(parse_types(args.events)) if args.events is not None else None
        except InvalidEndpoint as exc:
            print(f"usage error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        secret = signing.new_secret()
        async with open_store(settings) as store:
            endpoint = await store.create_endpoint(url, events, args.description, secret)
        print(f"added {endpoint.id} {endpoint.url}", file=out)
        print(
            f"  events: {', '.join(endpoint.events) if endpoint.events else 'every type'}", file=out
        )
        print(f"  secret: {secret}  (shown only now; verify signatures with it)", file=out)
        return EXIT_OK
    if args.action == "list":
        async with open_store(settings) as store:
            endpoints = await store.list_endpoints()
            backlog = {b.endpoint_id: b for b in await store.webhook_backlog()}
        if not endpoints:
            print("no endpoints; add one with: python -m server endpoint add URL", file=out)
        for endpoint in endpoints:
            waiting = backlog[endpoint.id].pending if endpoint.id in backlog else 0
            state = (
                f"disabled since {iso_time(endpoint.disabled_at)}: {endpoint.disabled_reason}"
                if endpoint.disabled
                else "enabled"
            )
            types = ",".join(endpoint.events) if endpoint.events else "*"
            print(
                f"{endpoint.id}  {endpoint.url}  events={types}  pending={waiting}  {state}",
                file=out,
            )
        return EXIT_OK
    async with open_store(settings) as store:
        removed = await store.delete_endpoint(args.endpoint_id)
    if not removed:
        print(
            f"no endpoint has id {args.endpoint_id!r}; see: python -m server endpoint list",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"removed {args.endpoint_id}", file=out)
    return EXIT_OK
