"""What the registry holds: every model with its newest version and aliases; one model's versions."""

from __future__ import annotations

from typing import Any

from loopml.platform import Platform

__all__ = ["list_models", "model_page", "model_versions"]


def list_models(platform: Platform, *, name_contains: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[dict[str, Any]]:
    return platform.models.list(name_contains=name_contains, limit=limit, offset=offset)


def model_page(platform: Platform, name: str, *, limit: int | None, offset: int,
               newest_first: bool) -> dict[str, Any]:
    """One page of versions plus ``total``: paged in SQL, so 2000 versions load 1 page's worth."""
    total, aliases = platform.models.version_count(name)
    versions = platform.models.versions(name, limit=limit, offset=offset, newest_first=newest_first)
    return {"name": name, "aliases": aliases, "versions": versions, "total": total}


def model_versions(platform: Platform, name: str) -> dict[str, Any]:
    """``{"name", "aliases": {alias: version}, "versions": [version records, oldest first]}``."""
    versions = platform.models.versions(name)
    aliases = {a: v["version"] for v in versions for a in v["aliases"]}
    return {"name": name, "aliases": dict(sorted(aliases.items())), "versions": versions}
