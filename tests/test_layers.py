"""The layering the README's layout promises, read from the code's own imports.

``core/`` is pure and imports nothing else of ours; ``service.py`` neither;
the store depends only on the core, the error tree, the service shape and
the settings, never on the services built on it (archive, delivery,
reconcile, web, observe), so each of those can be read, tested and replaced
above a store that does not know them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server"

#: Package (or module) -> what of ours it may import.
ALLOWED = {
    "server.core": ("server.core",),
    "server.service": (),
    "server.store": (
        "server.core",
        "server.errors",
        "server.service",
        "server.settings",
        "server.store",
    ),
}


def ours(path: Path) -> set[str]:
    """The ``server.*`` modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(SERVER.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
    return {name for name in found if name == "server" or name.startswith("server.")}


def files(layer: str) -> list[Path]:
    path = SERVER.parent / layer.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    allowed = ALLOWED[layer]
    wrong = {
        f"{path.relative_to(SERVER.parent)}: {name}"
        for path in files(layer)
        for name in ours(path)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    }
    assert not wrong, f"{layer} imports from above it:\n" + "\n".join(sorted(wrong))
    assert files(layer), layer
