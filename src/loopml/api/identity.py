"""/users, /tokens, /whoami: people, their roles and API tokens (a token is shown once, when made)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.auth import principal_of
from loopml.identity import service
from loopml.identity.permissions import ROLE_NAMES, ROLES
from loopml.identity.principal import Principal
from loopml.platform import Platform

users_router = APIRouter(prefix="/users", tags=["users"])
tokens_router = APIRouter(prefix="/tokens", tags=["tokens"])
whoami_router = APIRouter(tags=["tokens"])
Role = Literal[ROLE_NAMES]  # type: ignore[valid-type]


class User(BaseModel):
    name: str
    role: str
    created_by: str | None = None
    created_at: str | None = None


class TokenRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(description="public id: the token is lml_<id>_<secret>")
    name: str | None = None
    user: str | None = None
    role: str | None = Field(None, description="a narrower role than its user's (None: the user's)")
    scopes: list[str] = Field([], description="grants such as endpoints:mnist:invoke")
    created_by: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None


class NewToken(BaseModel):
    token: str = Field(description="the token itself: shown only in this answer")
    record: TokenRecord


class NewUser(BaseModel):
    user: User
    token: str = Field(description="the user's first token: shown only in this answer")
    token_record: TokenRecord


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="lowercase letters, digits, '.', '_', '-'")
    role: Role = Field(description="admin | editor | viewer | invoker")  # type: ignore[valid-type]
    expires: str | None = Field(None, description="the first token's lifetime, e.g. 30d (default: never)")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, description="whose token (default: the caller's own user; others: admin)")
    name: str | None = Field(None, max_length=128, description="a label, e.g. ci")
    role: Role | None = Field(None, description="narrower than the user's role")  # type: ignore[valid-type]
    scopes: list[str] = Field([], description="grants, e.g. endpoints:mnist:invoke, workflows:retrain:start")
    expires: str | None = Field(None, description="lifetime, e.g. 30d, 12h (default: never)")


class WhoAmI(BaseModel):
    name: str
    kind: str = Field(description="user | bootstrap | anonymous | invocation")
    role: str | None = None
    token_id: str | None = None
    grants: list[str]
    auth: bool = Field(description="whether this server requires tokens")


class Deleted(BaseModel):
    deleted: str


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _by(request: Request) -> Principal:
    return principal_of(request) or service.anonymous()


@users_router.get("", response_model=list[User], summary="List users")
def list_users(request: Request) -> list[dict[str, Any]]:
    return _platform(request).identity.users()


@users_router.post("", response_model=NewUser, status_code=201,
                   summary="Create a user with a role; answers their first token (shown once)")
def create_user(body: UserIn, request: Request) -> dict[str, Any]:
    return service.create_user(_platform(request), body.name, body.role, by=_by(request), expires=body.expires)


@users_router.get("/{name}", response_model=User, summary="Show a user")
def get_user(name: str, request: Request) -> dict[str, Any]:
    return _platform(request).identity.user(name)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role = Field(description="the new role; the user's tokens follow at once")  # type: ignore[valid-type]


@users_router.patch("/{name}", response_model=User, summary="Change a user's role (their tokens follow at once)")
def update_user(name: str, body: UserPatch, request: Request) -> dict[str, Any]:
    return service.change_role(_platform(request), name, body.role)


@users_router.delete("/{name}", response_model=Deleted, summary="Delete a user and all their tokens")
def delete_user(name: str, request: Request) -> dict[str, Any]:
    _platform(request).identity.delete_user(name)
    return {"deleted": name}


@tokens_router.get("", response_model=list[TokenRecord],
                   summary="List tokens (an admin: everyone's, or ?user=; others: their own)")
def list_tokens(request: Request, user: str | None = Query(None)) -> list[dict[str, Any]]:
    return service.list_tokens(_platform(request), by=_by(request), user=user)


@tokens_router.post("", response_model=NewToken, status_code=201,
                    summary="Create a token (shown once), never more than the caller and its user may do")
def create_token(body: TokenIn, request: Request) -> dict[str, Any]:
    return service.create_token(_platform(request), by=_by(request), user=body.user, name=body.name,
                                role=body.role, scopes=body.scopes, expires=body.expires)


@tokens_router.delete("/{token_id}", response_model=TokenRecord, summary="Revoke a token (at once)")
def revoke_token(token_id: str, request: Request) -> dict[str, Any]:
    return service.revoke_token(_platform(request), token_id, by=_by(request))


@whoami_router.get("/whoami", response_model=WhoAmI, summary="Who this token is and what it may do")
def whoami(request: Request) -> dict[str, Any]:
    p = _by(request)
    grants = sorted(p.grants) if p.grants != ROLES["admin"] else ["*"]
    return {"name": p.name, "kind": p.kind, "role": p.role, "token_id": p.token_id, "grants": grants,
            "auth": service.auth_enabled(_platform(request), request.app.state.settings.token)}
