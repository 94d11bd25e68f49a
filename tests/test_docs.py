"""The README documents every setting of the table (and no other) and every command."""

from __future__ import annotations

import re

from server.settings import SETTINGS
from tests.harness import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def configuration_rows() -> dict[str, tuple[str, str]]:
    """Each variable of the configuration table -> (its default cell, its meaning cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in section("Configuration").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def test_every_setting_is_in_the_readme_configuration_table_and_back():
    documented = configuration_rows()
    table = {row.name for row in SETTINGS}
    assert sorted(table - set(documented)) == [], "settings missing from the README table"
    assert sorted(set(documented) - table) == [], "README rows that are not settings"


def test_the_readme_states_each_default_of_the_table():
    documented = configuration_rows()
    for row in SETTINGS:
        if row.default_text:
            assert f"`{row.default_text}`" in documented[row.name][0], (
                f"README's default for {row.name} is not `{row.default_text}`"
            )


def test_every_command_is_documented():
    from server.cli.main import parser

    commands = parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for command in commands:
        assert f"python -m server {command}" in README, f"README does not document {command}"


def test_the_readme_shows_the_procfile_as_it_is():
    procfile = (ROOT / "Procfile").read_text(encoding="utf-8").strip()
    assert f"```\n{procfile}\n```" in section("Deployment")
