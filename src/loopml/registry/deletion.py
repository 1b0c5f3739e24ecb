"""Deleting datasets, model versions and jobs with their artifacts (see store/deletions_repo.py
for why this is crash-safe): the records go in one transaction that lists their artifact
prefixes in an outbox; the prefixes are removed right after, or by ``sweep`` at the next
control-plane start when the process died in between."""

from __future__ import annotations

import logging
from typing import Any

from loopml.platform import Platform

log = logging.getLogger("loopml.registry.deletion")


def purge(platform: Platform, outbox: list[dict[str, Any]]) -> list[str]:
    """Remove the artifacts of already-deleted records; returns the prefixes removed. A failure
    leaves the outbox row for the next sweep (never raises: the records are gone already)."""
    removed = []
    for row in outbox:
        try:
            if not platform.deletions.prefix_in_use(row["prefix"]):
                platform.artifacts.delete(row["prefix"])
                removed.append(row["prefix"])
            platform.deletions.finish(row["id"])
        except Exception:  # noqa: BLE001 - retried by the next sweep
            log.exception("removing %s (%s) failed; the next control-plane start retries", row["prefix"], row["what"])
    return removed


def sweep(platform: Platform) -> list[str]:
    """Finish deletions a crash interrupted (called once when the control plane starts)."""
    pending = platform.deletions.pending()
    if pending:
        log.warning("finishing %d interrupted artifact deletion(s)", len(pending))
    return purge(platform, pending)


def _done(platform: Platform, result: dict[str, Any]) -> dict[str, Any]:
    removed = purge(platform, result.pop("artifacts"))
    return {**result, "artifacts_removed": removed}


def delete_model(platform: Platform, name: str, version: int | None = None) -> dict[str, Any]:
    """``name:version``, or every version of ``name`` (refused while any is in use)."""
    if version is None:
        return _done(platform, platform.deletions.delete_model(name))
    return _done(platform, platform.deletions.delete_model_version(name, version))


def delete_dataset(platform: Platform, name: str, version: int | None = None, *, force: bool = False) -> dict[str, Any]:
    if version is None:
        result = platform.deletions.delete_dataset(name, force=force)
        parents = {row["prefix"].rsplit("/", 1)[0] for row in result["artifacts"]}
        done = _done(platform, result)
        for parent in parents:  # datasets/NAME/ itself, once its versions' files are gone
            platform.artifacts.remove_empty(parent)
        return done
    return _done(platform, platform.deletions.delete_dataset_version(name, version, force=force))


def delete_job(platform: Platform, job_id: str) -> dict[str, Any]:
    return _done(platform, platform.deletions.delete_job(job_id))


__all__ = ["purge", "sweep", "delete_model", "delete_dataset", "delete_job"]
