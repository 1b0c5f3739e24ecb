"""/audit: every mutating call (who, token id, action, object, status, request id, time); admin only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from loopml.core.errors import InvalidInput
from loopml.core.timeutil import parse_iso, utcnow
from loopml.identity.tokens import parse_expires

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEvent(BaseModel):
    id: int
    at: str
    actor: str
    token_id: str | None = None
    action: str
    object: str | None = None
    status: int | None = None
    outcome: str
    request_id: str | None = None


def _since(text: str | None):
    """An ISO time (2026-12-03T10:00:00Z) or a duration back from now (1h, 7d)."""
    if text is None:
        return None
    try:
        back = parse_expires(text)
    except InvalidInput:
        back = None
    if back is not None:
        return utcnow() - back
    try:
        value = parse_iso(text)
    except ValueError:
        raise InvalidInput(f"since {text!r} is not valid: give an ISO time (2026-12-03T10:00:00Z) "
                           "or a duration back from now (1h, 7d)") from None
    if value.tzinfo is None:
        raise InvalidInput(f"since {text!r} has no time zone: end it with Z (UTC)")
    return value


@router.get("", response_model=list[AuditEvent], summary="The audit log, newest first")
def list_audit(request: Request, user: str | None = Query(None, description="only this actor"),
               since: str | None = Query(None, description="ISO time or a duration back (1h, 7d)"),
               action: str | None = Query(None, description='e.g. "PUT /models/{name}/aliases/{alias}"'),
               limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
    return request.app.state.platform.audit.list(actor=user, since=_since(since), action=action, limit=limit)
