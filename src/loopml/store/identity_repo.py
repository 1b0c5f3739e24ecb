"""Users, API tokens and the audit log (tables ``users``, ``api_tokens``, ``audit_events``).

Writers: the API (users and tokens, one audit row per mutating call), the FunctionDispatcher
(a short-lived token per invocation, deleted when it ends) and workflows (audit rows for what an
execution changes). Token secrets never enter this module: only their sha256.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, NotFound
from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing


def user_record(u: t.User) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "created_by": u.created_by, "created_at": iso(u.created_at)}


def token_record(k: t.ApiToken) -> dict[str, Any]:
    """What lists show: never the hash."""
    return {"id": k.id, "name": k.name, "user": k.user, "subject": k.subject, "role": k.role,
            "scopes": list(k.scopes or []), "created_by": k.created_by, "created_at": iso(k.created_at),
            "expires_at": iso(k.expires_at), "revoked_at": iso(k.revoked_at)}


def audit_record(e: t.AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": iso(e.at), "actor": e.actor, "token_id": e.token_id, "action": e.action,
            "object": e.object, "status": e.status, "outcome": e.outcome, "request_id": e.request_id}


class IdentityRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- users --------------------------------------------------------------------------------
    def create_user(self, name: str, role: str, *, created_by: str | None = None) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                if s.get(t.User, name) is not None:
                    raise Conflict(f"user {name!r} already exists")
                row = t.User(name=name, role=role, created_by=created_by, created_at=utcnow())
                s.add(row)
                s.flush()
                return user_record(row)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    def user(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.User, name)
            if row is None:
                raise missing(s, t.User, "user", name)
            return user_record(row)

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.User, name, with_for_update=True)
            if row is None:
                raise missing(s, t.User, "user", name)
            row.role = role
            s.flush()
            return user_record(row)

    def users(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [user_record(u) for u in s.execute(select(t.User).order_by(t.User.name)).scalars()]

    def any_user(self) -> bool:
        with self.store.session() as s:
            return bool(s.execute(select(exists().where(t.User.name.is_not(None)))).scalar())

    def delete_user(self, name: str) -> dict[str, Any]:
        """Remove a user and every token of theirs (in one transaction)."""
        with self.store.session() as s:
            row = s.get(t.User, name)
            if row is None:
                raise missing(s, t.User, "user", name)
            record = user_record(row)
            s.execute(delete(t.ApiToken).where(t.ApiToken.user == name))
            s.delete(row)
            return record

    # -- tokens -------------------------------------------------------------------------------
    def create_token(self, token_id: str, secret_hash: str, *, user: str | None = None, subject: str | None = None,
                     name: str | None = None, role: str | None = None, scopes: list[str] | None = None,
                     created_by: str | None = None, expires_at: datetime | None = None) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                if user is not None and s.get(t.User, user) is None:
                    raise missing(s, t.User, "user", user)
                row = t.ApiToken(id=token_id, secret_hash=secret_hash, user=user, subject=subject, name=name,
                                 role=role, scopes=list(scopes or []), created_by=created_by,
                                 created_at=utcnow(), expires_at=expires_at)
                s.add(row)
                s.flush()
                return token_record(row)
        except IntegrityError:
            raise Conflict(f"token id {token_id!r} already exists") from None

    def credentials(self, token_id: str) -> tuple[dict[str, Any], str, dict[str, Any] | None] | None:
        """(token record, secret hash, its user's record or None) — what resolving a bearer
        token needs, in one read; None when there is no such token."""
        with self.store.session() as s:
            row = s.get(t.ApiToken, token_id)
            if row is None:
                return None
            owner = s.get(t.User, row.user) if row.user is not None else None
            return token_record(row), row.secret_hash, (user_record(owner) if owner is not None else None)

    def token(self, token_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.ApiToken, token_id)
            if row is None:
                raise NotFound(f"token {token_id!r} not found")
            return token_record(row)

    def tokens(self, user: str | None = None, *, users_only: bool = True) -> list[dict[str, Any]]:
        """Newest first; ``users_only``: without function invocations' tokens."""
        with self.store.session() as s:
            q = select(t.ApiToken).order_by(t.ApiToken.created_at.desc(), t.ApiToken.id)
            if user is not None:
                q = q.where(t.ApiToken.user == user)
            elif users_only:
                q = q.where(t.ApiToken.user.is_not(None))
            return [token_record(k) for k in s.execute(q).scalars()]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Mark revoked (kept, so lists and the audit log still name it). Idempotent."""
        with self.store.session() as s:
            row = s.get(t.ApiToken, token_id, with_for_update=True)
            if row is None:
                raise NotFound(f"token {token_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return token_record(row)

    def delete_token(self, token_id: str) -> bool:
        with self.store.session() as s:
            return bool(s.execute(delete(t.ApiToken).where(t.ApiToken.id == token_id)).rowcount)

    def delete_expired_subject_tokens(self, now: datetime | None = None) -> int:
        """Forget expired tokens that belong to no user (invocations cut off by a crash)."""
        with self.store.session() as s:
            return s.execute(delete(t.ApiToken).where(t.ApiToken.user.is_(None),
                                                      t.ApiToken.expires_at < (now or utcnow()))).rowcount


class AuditRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def record(self, *, actor: str, action: str, object: str | None = None, status: int | None = None,
               outcome: str = "ok", token_id: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        with self.store.session() as s:
            row = t.AuditEvent(at=utcnow(), actor=actor[:160], action=action[:160], object=object, status=status,
                               outcome=outcome, token_id=token_id, request_id=(request_id or None) and request_id[:64])
            s.add(row)
            s.flush()
            return audit_record(row)

    def list(self, *, actor: str | None = None, since: datetime | None = None, action: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        with self.store.session() as s:
            q = select(t.AuditEvent).order_by(t.AuditEvent.at.desc(), t.AuditEvent.id.desc()).limit(limit)
            if actor is not None:
                q = q.where(t.AuditEvent.actor == actor)
            if since is not None:
                q = q.where(t.AuditEvent.at >= since)
            if action is not None:
                q = q.where(t.AuditEvent.action == action)
            return [audit_record(e) for e in s.execute(q).scalars()]


__all__ = ["IdentityRepo", "AuditRepo", "user_record", "token_record", "audit_record"]
