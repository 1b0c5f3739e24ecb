"""/triggers: see loopml.triggers (filled in by issue 4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/triggers", tags=["triggers"])
