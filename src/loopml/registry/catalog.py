"""What the registry holds: every model with its newest version and aliases; one model's versions."""

from __future__ import annotations

from typing import Any

from loopml.platform import Platform

__all__ = ["list_models", "model_versions"]


def list_models(platform: Platform) -> list[dict[str, Any]]:
    return platform.models.list()


def model_versions(platform: Platform, name: str) -> dict[str, Any]:
    """``{"name", "aliases": {alias: version}, "versions": [version records, oldest first]}``."""
    versions = platform.models.versions(name)
    aliases = {a: v["version"] for v in versions for a in v["aliases"]}
    return {"name": name, "aliases": dict(sorted(aliases.items())), "versions": versions}
