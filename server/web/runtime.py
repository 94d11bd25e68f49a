"""The running parts of one taskhook process, shared by its routes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from server.settings import Settings
from server.store import Secrets, Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    secrets: Secrets
    started_at: float = field(default_factory=time.time)
    #: Background parts (reconciler, archiver, ...) by name; each has ``status()``.
    services: dict[str, Any] = field(default_factory=dict)
    #: Where archived files live (an ``ArchiveStorage``), set by the archive service.
    archive_storage: Any = None


def runtime(request: Request) -> Runtime:
    return request.app.state.taskhook
