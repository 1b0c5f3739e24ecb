"""/functions: see loopml.functions (filled in by issue 4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/functions", tags=["functions"])
