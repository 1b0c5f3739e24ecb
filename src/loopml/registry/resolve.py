"""What a model reference means right now: a reference → the concrete version record.

Every context that takes a reference (batch prediction, endpoints and their alias-following,
multi-model targets, evaluation, baselines, workflows) resolves it here; the store only answers
"version N of NAME" / "the version ALIAS names" / "the newest version".
"""

from __future__ import annotations

from typing import Any

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.platform import Platform
from loopml.registry.refs import FORMS, ModelRef, parse_model_ref

__all__ = ["resolve", "lookup", "trained_job", "candidate"]


def _as_ref(ref: str | ModelRef) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else parse_model_ref(ref)


def lookup(platform: Platform, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
    """The version record of already-parsed parts (an endpoint spec's variant, a job's spec)."""
    return platform.models.get(name, version, alias)


def resolve(platform: Platform, ref: str | ModelRef) -> dict[str, Any]:
    """The registered version a reference names (NotFound when there is none). ``job:ID`` names
    the version that job registered; a job whose bundle is not registered yet is refused."""
    ref = _as_ref(ref)
    if ref.is_job:
        job = trained_job(platform, ref.job_id)
        model = (job.get("result") or {}).get("model")
        if not model:
            raise InvalidInput(f"{ref} is not a registered model version: register it first "
                               f"(loopml jobs register {ref.job_id}), then use NAME:VERSION")
        return lookup(platform, model["name"], model["version"])
    return lookup(platform, ref.name, ref.version, ref.alias)


def trained_job(platform: Platform, job_id: str) -> dict[str, Any]:
    """A succeeded training job with an uploaded bundle, or a clear refusal."""
    job = platform.jobs.get(job_id)
    if job["kind"] != "train":
        raise InvalidInput(f"job {job_id!r} is a {job['kind']} job, not a training job")
    if job["status"] != "succeeded":
        raise Conflict(f"job {job_id!r} is {job['status']}; only a succeeded training job has a model")
    if not (job.get("result") or {}).get("artifact_prefix") and not (job.get("result") or {}).get("model"):
        raise InvalidInput(f"job {job_id!r} recorded no model bundle (it ran before unregistered training existed)")
    return job


def candidate(platform: Platform, label: str, ref: Any) -> dict[str, Any]:
    """One model of an evaluation: a registered version, an unregistered job's bundle, or — for
    an alias that is not set yet (a first deployment has no champion) — ``{"ref", "missing"}``.
    A reference the caller got wrong is InvalidInput naming ``models.<label>``."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(f"models.{label}: a model reference is required ({FORMS})")
    text = ref.strip()
    try:
        return _candidate(platform, text, parse_model_ref(text))
    except (NotFound, Conflict, InvalidInput) as exc:  # refused before anything is queued
        raise InvalidInput(f"models.{label}: {exc.message}") from None


def _candidate(platform: Platform, text: str, ref: ModelRef) -> dict[str, Any]:
    if ref.is_job:
        job = trained_job(platform, ref.job_id)
        result = job["result"]
        prefix = result.get("artifact_prefix")
        if not prefix:  # registered at training time, before artifact_prefix was in results
            prefix = lookup(platform, result["model"]["name"], result["model"]["version"])["artifact_prefix"]
        return {"ref": text, "job_id": job["id"], "artifact_prefix": prefix, "kind": job["spec"]["kind"],
                "trusted": False}
    try:
        mv = resolve(platform, ref)
    except NotFound as exc:
        if ref.alias is None:
            raise
        missing = f"alias {ref.alias} of {ref.name} is not set" if "alias" in exc.message else exc.message
        return {"ref": text, "missing": missing}
    return {"ref": text, "name": ref.name, "version": mv["version"], "resolved": mv["ref"],
            "artifact_prefix": mv["artifact_prefix"], "kind": mv["kind"], "trusted": bool(mv.get("trusted"))}
