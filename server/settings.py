"""Configuration, read once from the environment (and an optional ``.env``).

``Settings.from_env()`` only reads and validates; it touches no file and no
network. Everything that can fail at run time (creating the database folder,
generating secrets) happens later, in the store's start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from server.errors import ConfigError

__all__ = ["ConfigError", "Settings"]


def _read_dotenv(path: Path) -> dict[str, str]:
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


def _on_off(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}={value!r} is not understood; use 'on' or 'off'.")


def _number(name: str, value: str, kind: type = int, minimum: float = 0) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number; set it to e.g. {name}=30.") from None
    if number < minimum:
        raise ConfigError(f"{name}={value!r} must be at least {minimum}.")
    return number


def database_path(url: str) -> Path:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` -> a Path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(
            f"DATABASE_URL={url!r} is not supported; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db."
        )
    rest = url[len(prefix) :]
    if not rest or rest == "/":
        raise ConfigError(f"DATABASE_URL={url!r} names no file.")
    return Path(rest)


@dataclass(frozen=True)
class Settings:
    """Every setting of taskhook. Field names are the environment variables, lower-cased."""

    database_url: str = "sqlite:///./data/taskhook.db"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # empty: http://localhost:$PORT
    callback_secrets: tuple[str, ...] = ()  # empty: generated once, stored in the database
    api_token: str = ""  # empty: generated once, stored in the database
    acedata_api_token: str = ""
    acedata_base_url: str = "https://api.acedata.cloud"
    seedance2_api_key: str = ""
    seedance2_base_url: str = "https://ai.alad.com"
    reconciler: str = "embedded"  # embedded | off
    reconcile_interval: float = 30.0
    reconcile_grace: float = 60.0
    reconcile_batch_size: int = 50
    reconcile_max_age: float = 86400.0
    max_body_bytes: int = 1_048_576
    archive: bool = True
    archive_dir: str = "./data/files"
    archive_max_bytes: int = 2_147_483_648
    archive_concurrency: int = 4
    archive_allow_private: bool = False
    archive_url: str = ""  # s3://bucket/prefix: object storage instead of ARCHIVE_DIR
    log_format: str = "text"  # text | json
    sqlite_synchronous: str = "full"  # full | normal
    quarantine_max_rows: int = 100_000
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def database_path(self) -> Path:
        return database_path(self.database_url)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Read settings; the process environment wins over ``.env``."""
        env: dict[str, str] = dict(_read_dotenv(dotenv)) if dotenv is not None else {}
        env.update(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "env":
                continue
            name = f.name.upper()
            raw = get(name)
            if raw is None:
                continue
            if f.name == "callback_secrets":
                secrets = tuple(s.strip() for s in raw.split(",") if s.strip())
                if not secrets:
                    raise ConfigError("CALLBACK_SECRETS is set but holds no secret.")
                values[f.name] = secrets
            elif f.type in ("int",):
                values[f.name] = int(_number(name, raw, int, 1 if f.name != "port" else 0))
            elif f.type in ("float",):
                # A zero grace is meaningful (poll at once); a zero interval or age is not.
                minimum = 0 if f.name == "reconcile_grace" else 0.001
                values[f.name] = float(_number(name, raw, float, minimum))
            elif f.type in ("bool",):
                values[f.name] = _on_off(name, raw)
            else:
                values[f.name] = raw.strip()
        settings = cls(**values, env=env)
        settings.validate()
        return settings

    def validate(self) -> None:
        database_path(self.database_url)
        if self.reconciler not in ("embedded", "off"):
            raise ConfigError(
                f"RECONCILER={self.reconciler!r} is not understood; use 'embedded' or 'off'."
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(
                f"LOG_FORMAT={self.log_format!r} is not understood; use text or json."
            )
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ConfigError(
                f"SQLITE_SYNCHRONOUS={self.sqlite_synchronous!r} is not understood; "
                "use full or normal."
            )
        if self.archive_url:
            from server.archive.storage import check_archive_url  # loads no client library

            check_archive_url(self)
        for name in ("acedata_base_url", "seedance2_base_url"):
            value = getattr(self, name)
            if not value.startswith(("http://", "https://")):
                raise ConfigError(f"{name.upper()}={value!r} must start with http:// or https://.")

    def documented_names(self) -> list[str]:
        """The environment variable names, for the docs test."""
        return [f.name.upper() for f in fields(self) if f.name != "env"]
