"""Aliases and their rules: a valid, unreserved name; a move only to an existing version of the
same model (the store checks it under a row lock); a removal refused while endpoints follow the
alias, unless forced. Every move and removal is an ``alias_events`` row (who, from, to, when)."""

from __future__ import annotations

from typing import Any

from loopml.core.errors import Conflict
from loopml.platform import Platform
from loopml.registry.refs import check_alias_name
from loopml.store.endpoints_repo import model_refs

__all__ = ["set_alias", "delete_alias", "history", "followers"]


def set_alias(platform: Platform, name: str, alias: str, version: int, *, actor: str | None = None) -> dict[str, Any]:
    """Point ``name@alias`` at ``version``: ``{"name", "alias", "version", "previous"}``. Endpoints
    following the alias move at the control plane's next tick."""
    check_alias_name(alias)
    return platform.models.set_alias(name, alias, version, actor=actor)


def followers(platform: Platform, name: str, alias: str) -> list[dict[str, Any]]:
    """The endpoints that serve (or shadow) ``name@alias``: ``[{"kind": "endpoint", "name"}]``."""
    return [{"kind": "endpoint", "name": endpoint["name"]} for endpoint in platform.endpoints.list()
            if any(v.get("model") == name and v.get("alias") == alias for v in model_refs(endpoint.get("spec")))]


def delete_alias(platform: Platform, name: str, alias: str, *, actor: str | None = None,
                 force: bool = False) -> dict[str, Any]:
    """Remove ``name@alias``; refused (Conflict, the endpoints in ``details``) while endpoints
    follow it unless ``force``. Returns the move (``version`` None) and, forced, what it broke."""
    previous = platform.models.get(name, alias=alias)["version"]
    broken = followers(platform, name, alias)
    if broken and not force:
        raise Conflict(f"alias {name}@{alias} is used by {', '.join('endpoint ' + d['name'] for d in broken)}: "
                       "change or delete them first, or delete it anyway with --force (API: ?force=true), "
                       "which breaks them", dependents=broken)
    platform.models.delete_alias(name, alias, actor=actor)
    return {"name": name, "alias": alias, "version": None, "previous": previous,
            **({"broken": broken} if broken else {})}


def history(platform: Platform, name: str) -> list[dict[str, Any]]:
    """Every alias move of model ``name``, oldest first."""
    return platform.models.alias_history(name)
