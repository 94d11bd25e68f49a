"""What a reconcile pass reports: per provider, what it checked, changed and hit.

The manual command prints it, ``/readyz`` shows its summary, and the tests
read it; it holds no logic beyond counting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from server.errors import UpstreamError


def error_kind(exc: UpstreamError) -> str:
    """The ``UPSTREAM_CALLS`` outcome label (and report key) of an upstream error."""
    return exc.kind


@dataclass(frozen=True)
class Change:
    """A task whose merged status an answer changed (or, in a dry run, would change)."""

    task_id: str
    provider: str
    before: str
    after: str


@dataclass
class ProviderReport:
    provider: str
    due: int = 0
    checked: int = 0  # tasks that got an answer, "not yet" included
    completed: int = 0
    failed: int = 0
    expired: int = 0
    waiting: int = 0  # checked and still unfinished
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    skipped: str | None = None  # why the provider was not asked at all
    changes: list[Change] = field(default_factory=list)


@dataclass
class PassReport:
    started_at: float
    duration: float = 0.0
    dry_run: bool = False
    providers: dict[str, ProviderReport] = field(default_factory=dict)

    @property
    def upstream_failed(self) -> bool:
        return any(r.errors for r in self.providers.values())

    def total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.providers.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "duration": round(self.duration, 4),
            "checked": self.total("checked"),
            "completed": self.total("completed"),
            "failed": self.total("failed"),
            "expired": self.total("expired"),
            "calls": self.total("calls"),
            "errors": {p: dict(r.errors) for p, r in self.providers.items() if r.errors},
            "skipped": {p: r.skipped for p, r in self.providers.items() if r.skipped},
        }
