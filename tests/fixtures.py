"""Load the payload fixtures in ``tests/fixtures/`` (copied from the upstream docs, or built)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def load(name: str) -> Any:
    return json.loads(raw(name))
