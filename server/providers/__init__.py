"""The providers taskhook knows, by name: the registry everything else reads.

Each provider family is one module (``acedata``, ``seedance2``) with a
``Provider`` per provider (``base.py`` says what one is). To add a provider,
write its module and add it to ``_ALL`` below; routes, the reconciler, the
CLI, the dashboard and ``/readyz`` pick it up from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from server.providers.acedata import DREAMINA, SEEDANCE, SEEDREAM
from server.providers.base import Client, Provider
from server.providers.seedance2 import SEEDANCE2

if TYPE_CHECKING:
    import httpx

    from server.settings import Settings

_ALL: tuple[Provider, ...] = (
    SEEDREAM,
    SEEDANCE,
    DREAMINA,
    SEEDANCE2,
)

#: Every provider by name, in the order they are listed everywhere.
PROVIDERS: Mapping[str, Provider] = MappingProxyType({p.name: p for p in _ALL})
#: The provider names (the ``{provider}`` of callback URLs).
NAMES: tuple[str, ...] = tuple(PROVIDERS)


class UnknownProvider(ValueError):
    """A provider name that is not in the registry (a caller's bug: routes check first)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown provider {name!r}; expected one of {', '.join(NAMES)}")
        self.name = name


def get(name: str) -> Provider:
    """The provider called ``name``; ``UnknownProvider`` if there is none."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(name) from None


def token_settings(names: Iterable[str] = NAMES) -> list[str]:
    """The token settings the named providers need, each once, in registry order."""
    return list(dict.fromkeys(s for n in names for s in get(n).token_settings))


def build_clients(settings: Settings, http: httpx.AsyncClient) -> dict[str, Client]:
    """A client per provider whose token is configured; the others are left out."""
    clients = {p.name: p.client(settings, http) for p in _ALL}
    return {name: client for name, client in clients.items() if client is not None}


__all__ = [
    "NAMES",
    "PROVIDERS",
    "Client",
    "Provider",
    "UnknownProvider",
    "build_clients",
    "get",
    "token_settings",
]
