"""What a job asks of the node it runs on: CPUs, memory, GPUs. Pure data and validation.

Stored on the job (``spec["resources"]``, every field filled in) when it is queued, so the job
says what it asked for whichever executor runs it. The Ray executor turns it into the actor's
resource request (a node without that much free is never chosen); the local executor runs one
job per slot and only records it.
"""

from __future__ import annotations

from typing import Any

from loopml.core.errors import InvalidInput

# Per kind: training holds a model, its optimizer state and the dataset in memory; the others
# read a model and stream rows. Overridden per job with --cpus / --memory-gb / --gpus.
DEFAULTS: dict[str, dict[str, float]] = {
    "train": {"cpus": 1, "memory_gb": 2, "gpus": 0},
    "predict": {"cpus": 1, "memory_gb": 1, "gpus": 0},
    "evaluate": {"cpus": 1, "memory_gb": 1, "gpus": 0},
    "replica": {"cpus": 1, "memory_gb": 1, "gpus": 0},  # an endpoint's replica on Ray (its serving process)
}
FALLBACK = {"cpus": 1, "memory_gb": 1, "gpus": 0}
FIELDS = ("cpus", "memory_gb", "gpus")


def _number(name: str, value: Any, *, zero_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"resource {name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise InvalidInput(f"resource {name} must be {'at least 0' if zero_ok else 'more than 0'}, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def job_resources(kind: str, given: dict[str, Any] | None = None) -> dict[str, float]:
    """``given`` (any of cpus, memory_gb, gpus; None values ignored) over the kind's defaults."""
    if given is not None and not isinstance(given, dict):
        raise InvalidInput(f"resources must be an object like {{\"cpus\": 2, \"memory_gb\": 4}}, got {given!r}")
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown resource {', '.join(unknown)}; a job asks for {', '.join(FIELDS)}")
    out = {**DEFAULTS.get(kind, FALLBACK)}
    for key, value in given.items():
        out[key] = _number(key, value, zero_ok=key == "gpus")
    return out


def of_job(job: dict[str, Any]) -> dict[str, float]:
    """What a stored job asked for (jobs queued before resources were recorded: the kind's defaults)."""
    return job_resources(job["kind"], (job.get("spec") or {}).get("resources"))
