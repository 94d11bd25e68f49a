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
it touches no file and no network. How a row is declared, parsed and checked is
in ``server.setting_rows``; this module holds the rows and the checks that only
some settings need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server.errors import ConfigError
from server.setting_rows import (
    Setting,
    check,
    hide_password,
    parse,
    read_dotenv,
    setting,
    table,
)

__all__ = [
    "SETTINGS",
    "ConfigError",
    "Setting",
    "Settings",
    "database_path",
    "hide_password",
    "read_dotenv",
    "retry_schedule",
]

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


def _token(api: str, example: str) -> Any:
    """A provider's bearer token: empty by default, a secret."""
    return setting("", f"bearer token for the {api}", example=example, secret=True)


def _base_url(default: str, api: str) -> Any:
    """A provider's base URL: checked, and suggested with ``https://`` when it lacks one."""
    return setting(default, f"base of the {api}", check=_http_url, suggest=_with_scheme)


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
    acedata_api_token: str = _token("AceData tasks API", "<your AceData token>")
    acedata_base_url: str = _base_url("https://api.acedata.cloud", "AceData tasks API")
    seedance2_api_key: str = _token("Seedance 2.0 API", "<your Seedance 2.0 key>")
    seedance2_base_url: str = _base_url("https://ai.alad.com", "Seedance 2.0 task query")
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
            check(row, getattr(self, row.name.lower()), None)


SETTINGS: tuple[Setting, ...] = table(Settings)
