"""New versions: from a training job (at the end of training, or later for a job trained with
``register=False``) and from an imported model. Each is one store transaction: a version is
never half-registered, a job never succeeds without its version."""

from __future__ import annotations

from typing import Any

from loopml.core.errors import Conflict, InvalidInput
from loopml.datasets.service import validate_name
from loopml.platform import Platform
from loopml.registry.resolve import lookup, trained_job

__all__ = ["validate_model_name", "register_trained", "register_from_job", "register_import"]

# "job:ID" names a training job's bundle, so a model called "job" could never be referenced
RESERVED_NAMES = frozenset({"job"})


def validate_model_name(name: str) -> str:
    validate_name(name, "model")
    if name in RESERVED_NAMES:
        raise InvalidInput(f"model name {name!r} is reserved (job:ID names a training job's model)")
    return name


def register_from_job(platform: Platform, job_id: str, name: str, *, fields: dict[str, Any],
                      result: dict[str, Any]) -> dict[str, Any]:
    """The end of a training job: version ``name``:<next> and the job's success, together
    (``JobNoLongerRunning`` when the job was cancelled meanwhile: nothing is registered)."""
    return platform.models.register_from_job(job_id, name, fields=fields, result=result)


def register_import(platform: Platform, name: str, *, fields: dict[str, Any]) -> dict[str, Any]:
    """Version ``name``:<next> of a model no job produced (``loopml models import``; the name
    was checked with ``validate_model_name`` before the bundle was built)."""
    return platform.models.add_next_version(name, fields=fields)


def register_trained(platform: Platform, job_id: str, name: str | None = None) -> dict[str, Any]:
    """Register the bundle of a succeeded ``register=False`` training job as a new version.

    Idempotent: a job already registered (by this call or at training time) returns its version.
    """
    job = trained_job(platform, job_id)
    result = job["result"]
    if name is not None:
        validate_model_name(name)
    if result.get("model"):  # registered at training time, or by an earlier call
        model = result["model"]
        if name is not None and name != model["name"]:
            raise Conflict(f"job {job_id} is already registered as {model['ref']}; not as {name!r}")
        return lookup(platform, model["name"], model["version"])
    registration = result.get("registration")
    if not registration:
        raise InvalidInput(f"job {job_id} recorded nothing to register")
    target = name or result.get("register_as") or job["spec"]["register_as"]
    record = platform.models.register_job_bundle(job_id, target, fields=registration)
    if record["name"] != target:
        raise Conflict(f"job {job_id} is already registered as {record['ref']}; not as {target!r}")
    return record
