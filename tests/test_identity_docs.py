"""docs/security.md's route/role table is the permission table, not a copy that drifts."""

from __future__ import annotations

from pathlib import Path

from loopml.identity.permissions import markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def test_security_doc_table_is_generated_from_the_permission_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- permission-table:begin -->\n", "<!-- permission-table:end -->"
    assert begin in text and end in text
    shown = text.split(begin, 1)[1].split(end, 1)[0]
    assert shown == markdown_table(), (
        "docs/security.md's table differs from identity.permissions.ROUTES: regenerate it with "
        "python -c 'from loopml.identity.permissions import markdown_table; print(markdown_table())'")
