"""The running parts of one taskhook process, shared by its routes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from server.archive.storage import ArchiveStorage
from server.secrets import Secrets, reload_secrets
from server.service import Services
from server.settings import Settings
from server.store import Store
from server.web.throttle import SignInThrottle

#: Seconds between two reads of the stored secrets prompted by unknown callback tokens.
SECRETS_RELOAD_INTERVAL = 1.0


@dataclass
class Runtime:
    settings: Settings
    store: Store
    secrets: Secrets
    started_at: float = field(default_factory=time.time)
    #: Background services (reconciler, archiver, ...), started by the lifespan.
    services: Services = field(default_factory=Services)
    #: Where archived files live (``/files`` serves from it, whether ARCHIVE is on or off).
    archive_storage: ArchiveStorage | None = None
    #: Wrong dashboard sign-ins per client address (this process only).
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    secrets_read_at: float = field(default_factory=time.monotonic)

    async def reload_secrets(self) -> bool:
        """Re-read the stored secrets (another process may have rotated them); True if changed.

        At most once per ``SECRETS_RELOAD_INTERVAL``, so tokens that match
        nothing cost one small read a second at most.
        """
        now = time.monotonic()
        if now - self.secrets_read_at < SECRETS_RELOAD_INTERVAL:
            return False
        self.secrets_read_at = now
        fresh = await reload_secrets(self.store, self.settings)
        if (fresh.callback_secrets, fresh.api_token) == (
            self.secrets.callback_secrets,
            self.secrets.api_token,
        ):
            return False
        self.secrets = fresh
        return True


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.taskhook
    return rt
