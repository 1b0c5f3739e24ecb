"""Users, tokens and principals over the store; the one place that decides whether auth is on.

Auth is ON when a bootstrap token is configured (``LOOPML_TOKEN``) or any user exists; with
neither (a laptop, as installed) every call acts as ``anonymous`` with the admin role. Creating
the first user turns auth on. Function invocation tokens belong to no user, so they never turn
auth on; none are minted while it is off.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any, Iterable

from loopml.core.errors import Forbidden, InvalidInput, NotFound
from loopml.core.names import user_name
from loopml.core.timeutil import parse_iso, utcnow
from loopml.identity import tokens
from loopml.identity.permissions import EVERYTHING, ROLES, allows, check_permissions, role_grants
from loopml.identity.principal import ANONYMOUS, BOOTSTRAP, Principal
from loopml.platform import Platform

RESERVED_USERS = frozenset({"anonymous", "bootstrap"})


def check_user_name(name: Any) -> str:
    user_name(name)
    if name in RESERVED_USERS:
        raise InvalidInput(f"user name {name!r} is reserved")
    return name


def auth_enabled(platform: Platform, bootstrap: str | None = None) -> bool:
    """``bootstrap``: the LOOPML_TOKEN the API was started with (default: the platform's)."""
    return bool(bootstrap or platform.settings.token) or platform.identity.any_user()


def _effective(token: dict[str, Any], owner: dict[str, Any] | None) -> frozenset[str]:
    """A token's grants: its role's and scopes (neither: its user's role), never more than its
    user's role now (demoting a user demotes their tokens)."""
    wanted: set[str] = set(token.get("scopes") or [])
    if token.get("role"):
        wanted |= ROLES.get(token["role"], frozenset())
    if owner is None:
        return frozenset(wanted)  # an invocation's token: exactly its function's permissions
    ceiling = ROLES.get(owner["role"], frozenset())
    if not token.get("role") and not token.get("scopes"):
        return ceiling
    return frozenset(g for g in wanted if allows(ceiling, g))


def resolve(platform: Platform, bearer: str, *, bootstrap: str | None = None,
            now: datetime | None = None) -> Principal | None:
    """The principal of a bearer token; None when it is unknown, wrong, revoked or expired."""
    bootstrap = bootstrap or platform.settings.token
    if bootstrap and hmac.compare_digest(bearer.encode(), bootstrap.encode()):
        return BOOTSTRAP
    parts = tokens.split(bearer)
    if parts is None:
        return None
    token_id, secret = parts
    found = platform.identity.credentials(token_id)
    if found is None:
        return None
    record, secret_hash, owner = found
    if not tokens.secret_matches(secret, secret_hash) or record["revoked_at"] is not None:
        return None
    if record["expires_at"] is not None and parse_iso(record["expires_at"]) <= (now or utcnow()):
        return None
    if owner is None and record["user"] is not None:
        return None  # its user was deleted
    grants = _effective(record, owner)
    if owner is not None:
        return Principal(owner["name"], "user", grants, role=record.get("role") or owner["role"],
                         token_id=token_id, user=owner["name"])
    return Principal(record.get("subject") or f"token:{token_id}", "invocation", grants, token_id=token_id)


def may_invoke(platform: Platform, token: str, endpoint: str) -> bool:
    """The data plane's question: may this API token call ``endpoint`` (endpoints:NAME:invoke)?
    The serving process knows no bootstrap token: only users' and invocations' tokens count."""
    principal = resolve(platform, token)
    return principal is not None and principal.allows(f"endpoints:{endpoint}:invoke")


def anonymous() -> Principal:
    return ANONYMOUS


# -- users ---------------------------------------------------------------------------------------
def create_user(platform: Platform, name: str, role: str, *, by: Principal,
                expires: str | None = None) -> dict[str, Any]:
    """A user and their first token (shown once): ``{"user", "token", "token_record"}``."""
    check_user_name(name)
    role_grants(role)
    expiry = tokens.parse_expires(expires)
    user = platform.identity.create_user(name, role, created_by=by.name)
    token_id, token, secret_hash = tokens.mint()
    record = platform.identity.create_token(token_id, secret_hash, user=name, name="initial", created_by=by.name,
                                            expires_at=utcnow() + expiry if expiry else None)
    return {"user": user, "token": token, "token_record": record}


def change_role(platform: Platform, name: str, role: str) -> dict[str, Any]:
    """A user's new role; their tokens follow at once (a token never exceeds its user's role)."""
    role_grants(role)
    return platform.identity.set_role(name, role)


# -- tokens --------------------------------------------------------------------------------------
def create_token(platform: Platform, *, by: Principal, user: str | None = None, name: str | None = None,
                 role: str | None = None, scopes: Iterable[str] = (), expires: str | None = None) -> dict[str, Any]:
    """A token for ``user`` (default: the caller's own user), never able to do more than the caller
    nor its user. Returns ``{"token" (shown once), "record"}``."""
    if by.kind == "invocation":
        raise Forbidden("a function invocation's token cannot create tokens")
    target = user or by.user
    if target is None:
        raise InvalidInput("give the user the token is for (--user NAME): the caller "
                           f"({by.name}) is not a user of its own")
    if target != by.user and not by.allows("users:write"):
        raise Forbidden(f"only an admin (users:write) creates tokens for another user than {by.user}")
    owner = platform.identity.user(target)
    scope_list = check_permissions(scopes, "scope")
    if role is not None:
        role_grants(role)
    expiry = tokens.parse_expires(expires)
    wanted = set(scope_list) | (set(ROLES[role]) if role else set())
    effective = wanted if (role or scope_list) else set(ROLES[owner["role"]])
    ceiling = ROLES[owner["role"]]
    for grant in sorted(effective):
        if not allows(ceiling, grant):
            raise InvalidInput(f"user {target} (role {owner['role']}) does not hold {grant}: a token cannot "
                               "grant more than its user's role")
        if not _caller_covers(by, grant):
            raise Forbidden(f"{by.describe()} does not hold {grant}, so it cannot grant it")
    token_id, token, secret_hash = tokens.mint()
    record = platform.identity.create_token(token_id, secret_hash, user=target, name=name, role=role,
                                            scopes=scope_list, created_by=by.name,
                                            expires_at=utcnow() + expiry if expiry else None)
    return {"token": token, "record": record}


def _caller_covers(by: Principal, grant: str) -> bool:
    return EVERYTHING in by.grants if grant == EVERYTHING else by.allows(grant)


def list_tokens(platform: Platform, *, by: Principal, user: str | None = None) -> list[dict[str, Any]]:
    """An admin sees every user's tokens (or ``user``'s); anyone else only their own."""
    if by.allows("users:read"):
        return platform.identity.tokens(user)
    if by.user is None or (user is not None and user != by.user):
        raise Forbidden(f"{by.describe()} may list only its own user's tokens")
    return platform.identity.tokens(by.user)


def revoke_token(platform: Platform, token_id: str, *, by: Principal) -> dict[str, Any]:
    record = platform.identity.token(token_id)
    if not by.allows("users:write") and (by.user is None or record["user"] != by.user):
        raise NotFound(f"token {token_id!r} not found")  # others' tokens are not even named
    return platform.identity.revoke_token(token_id)


# -- function invocations -------------------------------------------------------------------------
def mint_invocation_token(platform: Platform, function: dict[str, Any], invocation_id: str,
                          lifetime_s: float) -> tuple[str, str] | None:
    """A token limited to exactly ``function["permissions"]`` that expires with the invocation
    (``lifetime_s``); (id, token), or None while auth is off (nothing to limit)."""
    if not auth_enabled(platform):
        return None
    platform.identity.delete_expired_subject_tokens()
    token_id, token, secret_hash = tokens.mint()
    platform.identity.create_token(
        token_id, secret_hash, subject=f"function:{function['name']}", name=f"invocation {invocation_id}"[:128],
        scopes=list(function.get("permissions") or []), created_by="function-dispatcher",
        expires_at=utcnow() + timedelta(seconds=lifetime_s))
    return token_id, token


def end_invocation_token(platform: Platform, token_id: str) -> None:
    platform.identity.delete_token(token_id)


def check_function_permissions(permissions: Iterable[str], *, by: Principal | None) -> list[str]:
    """A function's execution role: valid permissions, none about identity, each held by whoever
    gives it (like IAM's PassRole: an editor cannot make a function an admin)."""
    checked = check_permissions(permissions)
    for p in checked:
        if p.split(":")[0] in ("users", "tokens", "audit"):
            raise InvalidInput(f"permission {p!r} cannot be given to a function")
        if by is not None and not by.allows(p):
            raise Forbidden(f"{by.describe()} does not hold {p}, so it cannot give it to a function")
    return checked


# -- audit ----------------------------------------------------------------------------------------
def record_audit(platform: Platform, principal: Principal | None, *, action: str, object: str | None,
                 status: int | None, request_id: str | None = None, actor: str | None = None) -> None:
    outcome = "ok" if status is None or status < 400 else "denied" if status in (401, 403) else "failed"
    platform.audit.record(actor=actor or (principal.name if principal else "anonymous"), action=action,
                          object=object, status=status, outcome=outcome,
                          token_id=principal.token_id if principal else None, request_id=request_id)
