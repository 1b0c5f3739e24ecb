"""Checks shared by the metadata-store contract tests (tests/test_metadata_store_contract*.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, select


def assert_utc_iso(value: str | None) -> datetime:
    """``value`` is an ISO time in UTC with a ``Z`` (tz-aware once parsed), within 10 minutes of now."""
    assert isinstance(value, str) and value.endswith("Z"), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 600, value
    return parsed


def count(store, table, *where) -> int:
    """Rows of ``table`` (matching ``where``) as the database holds them."""
    with store.session() as s:
        return s.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


# nested, unicode, nulls, floats, booleans: what a JSON column must hand back unchanged
ODD_JSON = {"ünïcode ✓": ["a", 1, 2.5, None, True, {"deep": {"deeper": [[], {}]}}], "empty": "",
            "big": 2**53, "neg": -0.125}
