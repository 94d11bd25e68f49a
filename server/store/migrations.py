"""What both backends' migrations share: the one check before any of them runs."""

from __future__ import annotations

from server.errors import SchemaTooNew


def refuse_newer(version: int, known: int) -> None:
    """Raise ``SchemaTooNew`` for a database at a schema ``version`` past the ``known`` one."""
    if version > known:
        raise SchemaTooNew(
            f"the database is at schema version {version}, this taskhook knows up to "
            f"{known}; upgrade taskhook or point DATABASE_URL elsewhere"
        )
