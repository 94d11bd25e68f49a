"""Text holding NUL: PostgreSQL's ``text`` cannot, taskhook's values may.

A task id may hold any character (README, "Hostile input"), NUL included,
and so may a trace id, an endpoint's description, anything a client sends.
PostgreSQL refuses ``\\x00`` in every text value, so taskhook's connections
carry a string adaptation (``ADAPTERS``) that spells such a value another way
on the wire and back:

- a string without NUL that does not start with ``PREFIX`` (every ordinary
  one) is sent and read as it is;
- any other is sent as ``PREFIX`` followed by the string with ``\\`` written
  ``\\\\`` and NUL written ``\\0``, and read back to the same string.

The spelling is one-to-one, so equality (keys, ``UNIQUE``, ``WHERE task_key =``)
holds as before; only the sort order of such values differs. JSON columns
never hold a raw NUL (they are written with ``ensure_ascii``).
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import adapt, adapters, postgres
from psycopg.types import string

#: Starts every value that was spelled out; ESC, not NUL, so PostgreSQL takes it.
PREFIX = "\x1bnul:"
_PREFIX_BYTES = PREFIX.encode()
_ESCAPE = re.compile(r"\\([\\0])")


def encode(text: str) -> str:
    """``text`` as PostgreSQL can hold it (itself unless it holds NUL or starts with PREFIX)."""
    if "\x00" not in text and not text.startswith(PREFIX):
        return text
    return PREFIX + text.replace("\\", "\\\\").replace("\x00", "\\0")


def decode(stored: str) -> str:
    """The string ``encode`` was given."""
    if not stored.startswith(PREFIX):
        return stored
    return _ESCAPE.sub(lambda m: "\x00" if m.group(1) == "0" else "\\", stored[len(PREFIX) :])


class _Dumper(string.StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(encode(obj))


class _TextDumper(string.StrDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(encode(obj))


class _BinaryDumper(string.StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(encode(obj))


class _Loader(string.TextLoader):
    def load(self, data: Any) -> Any:
        if bytes(data[: len(_PREFIX_BYTES)]) == _PREFIX_BYTES:
            return decode(bytes(data).decode())
        return super().load(data)


class _BinaryLoader(string.TextBinaryLoader):
    def load(self, data: Any) -> Any:
        if bytes(data[: len(_PREFIX_BYTES)]) == _PREFIX_BYTES:
            return decode(bytes(data).decode())
        return super().load(data)


def _adapters() -> adapt.AdaptersMap:
    mapping = adapt.AdaptersMap(adapters)
    mapping.register_dumper(str, _TextDumper)  # by oid: COPY … set_types(["text", …])
    mapping.register_dumper(str, _BinaryDumper)
    mapping.register_dumper(str, _Dumper)  # last: the default for a str parameter (%s)
    for oid in [postgres.types[name].oid for name in ("text", "varchar", "bpchar", "name")]:
        mapping.register_loader(oid, _Loader)
        mapping.register_loader(oid, _BinaryLoader)
    mapping.register_loader(705, _Loader)  # "unknown": a bare string literal
    return mapping


#: The adaptation every taskhook connection uses (``connection.CONNECT_KWARGS``).
ADAPTERS = _adapters()
