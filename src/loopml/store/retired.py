"""High-water marks of deleted model and dataset names.

Captured traffic, alias history, workflow histories and the serving cache name versions as
``name:version``; a name deleted whole and created again must therefore continue its numbering,
never hand out ``name:1`` a second time. The mark is written in the delete's own transaction
(so a crash cannot lose it) and seeds ``retired_version`` of the row that re-creates the name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loopml.store import tables as t


def retired_top(s: Any, kind: str, name: str) -> int:
    """The highest version number ``name`` ever had before it was deleted whole (0: never)."""
    top = s.execute(select(t.RetiredName.last_version)
                    .where(t.RetiredName.kind == kind, t.RetiredName.name == name)).scalar()
    return top or 0


def retire(s: Any, kind: str, name: str, top: int) -> None:
    """Remember ``top`` for ``name`` (in session ``s``, i.e. the delete's transaction)."""
    row = s.get(t.RetiredName, (kind, name), with_for_update=True)
    if row is None:
        s.add(t.RetiredName(kind=kind, name=name, last_version=top))
    else:
        row.last_version = max(row.last_version, top)
