"""Configuration: one table of settings, read once from the environment (and ``.env``).

The table is the ``Settings`` dataclass itself: each field is one row, declared
with ``setting(default, help, ...)`` and typed by its annotation (``str``,
``int``, ``float``, ``bool`` or ``tuple[str, ...]`` for comma-separated lists).
That one row drives

* parsing and validation (``Settings.from_env``): a refused value raises
  ``ConfigError`` whose one-line message names the variable, shows the value
  (never a secret's) and suggests a value that fits that setting;
* the docs test: every row is in the README's configuration table and back;
* ``repr``: secrets (``secret=True``) show as ``'***'``, passwords in URLs as
  ``***``.

Adding a setting is adding one field. ``from_env`` only reads and validates;
it touches no file and no network.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from server.errors import ConfigError

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "database_path", "hide_password"]

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


# -- checks that a type and a range cannot express -------------------------------------


def database_path(url: str) -> Path:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` -> a Path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(
            f"DATABASE_URL={hide_password(url)!r} is not a SQLite URL, so it names no file"
        )
    return Path(url[len(prefix) :])


def _database_url(url: str) -> str | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
        return "names no file" if rest in ("", "/") or rest.endswith("/") else None
    if url.startswith(("postgresql://", "postgres://")):
        return None if url.partition("://")[2] else "names no server"
    return "is not a sqlite:/// or postgresql:// URL"


def _http_url(url: str) -> str | None:
    """A base URL: ``http(s)://host[:port][/path]``."""
    if not url.startswith(("http://", "https://")):
        return "has no http:// or https:// scheme"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if not parts.hostname:
        return "names no host"
    if parts.query or parts.fragment:
        return "must not have a query or a fragment"
    return None


def _with_scheme(raw: str) -> str | None:
    """For a base URL that only lacks its scheme, the same with ``https://``."""
    bare = raw.strip().rstrip("/")
    if bare and "://" not in raw and " " not in bare and _http_url(f"https://{bare}") is None:
        return f"https://{bare}"
    return None


def _retry_schedule(text: str) -> str | None:
    """Comma-separated non-negative seconds, at least one."""
    try:
        retry_schedule(text)
    except ValueError as exc:
        return str(exc)
    return None


def retry_schedule(text: str) -> tuple[float, ...]:
    """``DELIVERY_RETRY_SCHEDULE`` as delays in seconds; ValueError says what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise ValueError("must be comma-separated seconds, e.g. 0,5,300")
    delays = []
    for part in parts:
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(f"holds {part!r}, which is not a number of seconds") from None
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"holds {part!r}; each delay must be 0 or more seconds")
        delays.append(delay)
    if len(delays) > 100:
        raise ValueError(f"has {len(delays)} delays; at most 100 attempts are allowed")
    return tuple(delays)


def _archive_url(url: str) -> str | None:
    from server.archive.storage import archive_url_problem  # loads no client library

    return archive_url_problem(url)


# -- the table --------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting of taskhook. Field names are the environment variables, lower-cased."""

    database_url: str = setting(
        "sqlite:///./data/taskhook.db",
        "where state lives (sqlite:///relative/path, sqlite:////absolute/path, postgresql://…)",
        example="sqlite:///./data/taskhook.db",
        check=_database_url,
    )
    database_pool_size: int = setting(
        10, "PostgreSQL connections per process", minimum=1, maximum=1000
    )
    host: str = setting("127.0.0.1", "listen address", example="127.0.0.1")
    port: int = setting(8000, "listen port", minimum=1, maximum=65535)
    public_url: str = setting(
        "",
        "base of the callback URLs it prints (empty: http://localhost:$PORT)",
        example="https://taskhook.example.com",
        check=_http_url,
        suggest=_with_scheme,
    )
    callback_secrets: tuple[str, ...] = setting(
        (),
        "comma-separated; empty: generated once, stored in the database",
        example="<new secret>,<old secret>",
        secret=True,
    )
    api_token: str = setting(
        "",
        "bearer token; empty: generated once, stored in the database",
        example="<a long random string>",
        secret=True,
    )
    acedata_api_token: str = setting(
        "", "bearer token for the AceData tasks API", example="<your AceData token>", secret=True
    )
    acedata_base_url: str = setting(
        "https://api.acedata.cloud",
        "base of the AceData tasks API",
        check=_http_url,
        suggest=_with_scheme,
    )
    seedance2_api_key: str = setting(
        "", "bearer token for the Seedance 2.0 API", example="<your Seedance 2.0 key>", secret=True
    )
    seedance2_base_url: str = setting(
        "https://ai.alad.com",
        "base of the Seedance 2.0 task query",
        check=_http_url,
        suggest=_with_scheme,
    )
    reconciler: str = setting("embedded", "where passes run", choices=("embedded", "off"))
    reconcile_interval: float = setting(30.0, "seconds between passes", minimum=0.001)
    reconcile_grace: float = setting(60.0, "seconds before a new task is polled", minimum=0)
    reconcile_batch_size: int = setting(50, "ids per retrieve_batch call", minimum=1, maximum=1000)
    reconcile_max_age: float = setting(86400.0, "seconds before expiry", minimum=0.001)
    max_body_bytes: int = setting(1_048_576, "largest callback body", minimum=1)
    archive: bool = setting(True, "copy result files")
    archive_dir: str = setting("./data/files", "where archived files live")
    archive_max_bytes: int = setting(2_147_483_648, "largest archived file", minimum=1)
    archive_concurrency: int = setting(4, "downloads at once", minimum=1, maximum=256)
    archive_allow_private: bool = setting(False, "fetch private addresses")
    archive_url: str = setting(
        "",
        "s3://bucket/prefix: archived files in S3-compatible object storage, not ARCHIVE_DIR",
        example="s3://my-bucket/taskhook",
        check=_archive_url,
    )
    log_format: str = setting("text", "log line format", choices=("text", "json"))
    sqlite_synchronous: str = setting("full", "SQLite fsync policy", choices=("full", "normal"))
    quarantine_max_rows: int = setting(100_000, "quarantined deliveries kept", minimum=1)
    quarantine_max_bytes: int = setting(1 << 30, "quarantined body bytes kept", minimum=1)
    retention_days: int = setting(30, "days final tasks keep raw bodies (0: ever)", minimum=0)
    submit_timeout: float = setting(
        60.0, "seconds POST /submit waits for the creation answer", minimum=0.001, maximum=600
    )
    event_retention: float = setting(604800.0, "seconds events stay readable", minimum=1)
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1", "proxies whose X-Forwarded-* headers are trusted", example="127.0.0.1"
    )
    delivery: bool = setting(True, "send events to webhook endpoints")
    delivery_retry_schedule: str = setting(
        "0,5,300,1800,7200,18000,36000,36000",
        "seconds before each attempt: the first after the commit, each next after the last",
        example="0,5,300,1800",
        check=_retry_schedule,
    )
    delivery_timeout: float = setting(15.0, "seconds one attempt may take", minimum=0.1)
    delivery_disable_after: float = setting(
        432000.0, "disable an endpoint whose every attempt failed this long (0: never)", minimum=0
    )
    delivery_concurrency: int = setting(
        64, "attempts in flight per process", minimum=1, maximum=1024
    )
    delivery_endpoint_concurrency: int = setting(
        8, "attempts in flight per endpoint", minimum=1, maximum=256
    )
    limit_concurrency: int = setting(1000, "requests served at once", minimum=1)
    header_timeout: float = setting(10.0, "seconds to send the request headers", minimum=0.1)
    body_timeout: float = setting(30.0, "seconds to send the request body", minimum=0.1)

    # -- derived values -----------------------------------------------------------------

    @property
    def database_path(self) -> Path:
        """The SQLite file (ConfigError for a PostgreSQL URL)."""
        return database_path(self.database_url)

    @property
    def database_label(self) -> str:
        """Where the database is, for messages: the file, or the URL without its password."""
        if self.database_url.startswith("sqlite:///"):
            return str(self.database_path)
        return hide_password(self.database_url)

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """``DELIVERY_RETRY_SCHEDULE`` as delays in seconds (validated when read)."""
        return retry_schedule(self.delivery_retry_schedule)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")

    def __repr__(self) -> str:
        shown = []
        for row in SETTINGS:
            value = getattr(self, row.name.lower())
            if row.secret:
                text = "'***'" if value else repr(value)
            elif isinstance(value, str):
                text = repr(hide_password(value))
            else:
                text = repr(value)
            shown.append(f"{row.name.lower()}={text}")
        return f"Settings({', '.join(shown)})"

    # -- reading ------------------------------------------------------------------------

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Read and validate every setting; the process environment wins over ``.env``."""
        env: dict[str, str] = dict(read_dotenv(dotenv)) if dotenv is not None else {}
        env.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for row in SETTINGS:
            raw = env.get(row.name)
            if raw is None or raw.strip() == "":
                continue
            values[row.name.lower()] = parse(row, raw.strip())
        return cls(**values)

    def validate(self) -> None:
        """Re-check every value (for settings built in code); raises ConfigError."""
        for row in SETTINGS:
            _check(row, getattr(self, row.name.lower()), None)


def _build_table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    rows = []
    for f in fields(Settings):
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


SETTINGS: tuple[Setting, ...] = _build_table()


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
    _check(row, value, raw)
    return value


def _check(row: Setting, value: Any, raw: str | None) -> None:
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
