"""/workflows: see loopml.workflows (filled in by issue 4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/workflows", tags=["workflows"])
