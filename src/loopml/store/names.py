"""NotFound for a named object, with "did you mean …?" from the names that do exist."""

from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy import select

from loopml.core.errors import NotFound


def missing(session: Any, table: Any, noun: str, name: str) -> NotFound:
    """The error to raise when ``table`` has no row named ``name`` (close names suggested)."""
    names = session.execute(select(table.name)).scalars().all()
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    if not close:
        return NotFound(f"{noun} {name!r} not found")
    return NotFound(f"{noun} {name!r} not found; did you mean {' or '.join(repr(c) for c in close)}?",
                    suggestions=close)
