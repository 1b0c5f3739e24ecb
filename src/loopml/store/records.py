"""Rows to plain dicts: what leaves the store is JSON-ready and detached from sessions."""

from __future__ import annotations

from typing import Any

from loopml.core.timeutil import iso
from loopml.store import tables as t


def dataset_version(v: t.DatasetVersion, name: str) -> dict[str, Any]:
    return {"name": name, "version": v.version, "ref": f"{name}:{v.version}", "content_hash": v.content_hash,
            "kind": v.kind, "source": v.source, "format": v.format, "rows": v.rows, "schema": v.schema_,
            "splits": v.splits, "artifact_prefix": v.artifact_prefix, "created_at": iso(v.created_at)}


def job(j: t.Job) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "spec": j.spec, "reason": j.reason,
            "progress": j.progress, "result": j.result, "cancel_requested": j.cancel_requested,
            "worker": {"host": j.worker_host, "pid": j.worker_pid, "heartbeat_at": iso(j.heartbeat_at)},
            "created_at": iso(j.created_at), "started_at": iso(j.started_at), "ended_at": iso(j.ended_at)}


def model_version(v: t.ModelVersion, name: str, aliases: list[str]) -> dict[str, Any]:
    return {"name": name, "version": v.version, "ref": f"{name}:{v.version}", "aliases": sorted(aliases),
            "job_id": v.job_id, "dataset": v.dataset, "kind": v.kind, "template": v.template,
            "hparams": v.hparams, "metrics": v.metrics, "lineage": v.lineage, "runtimes": v.runtimes,
            "trusted": v.trusted, "artifact_prefix": v.artifact_prefix, "created_at": iso(v.created_at)}
