"""One row of the settings table: how it is declared, parsed, checked and shown.

``server.settings`` declares the rows (the ``Settings`` dataclass, one field per
setting, each made with ``setting(...)``); this module is the machinery every row
shares: ``table()`` turns the dataclass into ``Setting`` rows, ``parse`` turns one
environment value into its typed value or a ``ConfigError`` naming the variable,
``read_dotenv`` reads a ``.env`` file and ``hide_password`` keeps URL passwords
out of messages and reprs. It imports nothing of ours but the errors.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from server.errors import ConfigError

__all__ = [
    "Check",
    "Setting",
    "check",
    "hide_password",
    "parse",
    "read_dotenv",
    "setting",
    "table",
]

#: ``check(value)`` returns what is wrong with a parsed value and the fix, or None.
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str  # the environment variable
    type: type  # str, int, float, bool or tuple (comma-separated strings)
    default: Any
    default_text: str  # the default as one would write it in the environment ("" for none)
    help: str
    example: str  # a value to suggest when the one given is refused
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    check: Check | None = None
    #: Derives the suggestion from the refused value (``example.com`` -> ``https://example.com``).
    suggest: Callable[[str], str | None] | None = None

    def show(self, raw: str) -> str:
        """``NAME='value'`` for a message: a secret's value never, a URL's password hidden."""
        return self.name if self.secret else f"{self.name}={hide_password(raw)!r}"

    def refuse(self, raw: str, problem: str) -> ConfigError:
        example = (self.suggest(raw) if self.suggest is not None else None) or self.example
        return ConfigError(f"{self.show(raw)} {problem}; set e.g. {self.name}={example}")


def setting(
    default: Any,
    help: str,
    *,
    example: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
    check: Check | None = None,
    suggest: Callable[[str], str | None] | None = None,
) -> Any:
    """Declare one row: a dataclass field whose metadata the table is built from."""
    meta = {
        "help": help,
        "example": example,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "secret": secret,
        "check": check,
        "suggest": suggest,
    }
    return field(default=default, metadata={"setting": meta})


def hide_password(text: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://user:***@host/...``; anything else as is."""
    if "@" not in text or "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def table(settings_class: type) -> tuple[Setting, ...]:
    """The rows of a dataclass whose every field was declared with ``setting()``."""
    hints = typing.get_type_hints(settings_class)
    rows = []
    for f in fields(settings_class):
        meta = f.metadata["setting"]
        kind = typing.get_origin(hints[f.name]) or hints[f.name]
        default_text = _default_text(f.default)
        rows.append(
            Setting(
                name=f.name.upper(),
                type=kind,
                default=f.default,
                default_text=default_text,
                help=meta["help"],
                example=meta["example"] or default_text or "…",
                minimum=meta["minimum"],
                maximum=meta["maximum"],
                choices=meta["choices"],
                secret=meta["secret"],
                check=meta["check"],
                suggest=meta["suggest"],
            )
        )
    return tuple(rows)


def _default_text(value: Any) -> str:
    if value is MISSING or value in ("", ()):
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- parsing ----------------------------------------------------------------------------

_ON = ("on", "true", "1", "yes")
_OFF = ("off", "false", "0", "no")


def parse(row: Setting, raw: str) -> Any:
    """One environment value -> its typed value, or ConfigError naming the setting."""
    value: Any
    if row.type is bool:
        lowered = raw.lower()
        if lowered not in _ON + _OFF:
            raise row.refuse(raw, "is not on or off")
        value = lowered in _ON
    elif row.type is int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise row.refuse(raw, "is not a whole number") from None
    elif row.type is float:
        try:
            value = float(raw)
        except ValueError:
            raise row.refuse(raw, "is not a number") from None
        if not math.isfinite(value):
            raise row.refuse(raw, "is not a finite number")
    elif row.type is tuple:
        value = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not value:
            raise row.refuse(raw, "holds no value")
    else:
        value = raw
    check(row, value, raw)
    return value


def check(row: Setting, value: Any, raw: str | None) -> None:
    shown = raw if raw is not None else str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = row.minimum, row.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise row.refuse(shown, f"is out of range ({_range(low, high)})")
    if row.choices and value not in row.choices:
        raise row.refuse(shown, f"is not one of {', '.join(row.choices)}")
    if row.check is not None and value not in ("", ()):
        problem = row.check(value)
        if problem is not None:
            raise row.refuse(shown, problem)


def _range(low: float | None, high: float | None) -> str:
    def text(n: float) -> str:
        return str(int(n)) if float(n).is_integer() else str(n)

    if low is not None and high is not None:
        return f"{text(low)} to {text(high)}"
    if low is not None:
        return f"at least {text(low)}"
    return f"at most {text(high)}" if high is not None else "any"


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a minimal ``KEY=value`` file; comments and blank lines are skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values
