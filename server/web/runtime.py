"""The running parts of one taskhook process, shared by its routes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from server.archive.storage import ArchiveStorage
from server.secrets import Secrets
from server.service import Services
from server.settings import Settings
from server.store import Store
from server.web.throttle import SignInThrottle


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


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.taskhook
    return rt
