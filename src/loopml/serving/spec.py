"""What an endpoint should be: the desired state users write and the control plane keeps.

Pure validation (no I/O): the API, the CLI's flag parsing and the control plane share it. A
spec is stored as JSON; model references stay as written (``mnist@production`` follows the
alias), the control plane resolves them to concrete versions (``resolve_spec``).

    {"variants": [{"name": "primary", "model": "mnist", "version": null, "alias": "production",
                   "weight": 1.0}],
     "shadow": {"name": "shadow", "model": "mnist", "version": 4, "alias": null} | null,
     "capture_percent": 0.0, "max_batch_size": 64, "max_batch_delay_ms": 2.0,
     "multi_model": false, "replicas": 1}

Weights are relative, as in SageMaker (``InitialVariantWeight``): traffic share = weight / sum.
``key_hashes``: SHA-256 digests of per-endpoint API keys (the keys themselves are shown once,
when made, and never stored); with any, an invocation needs ``Authorization: Bearer <key>``
(or the data plane's own token). ``replicas``: data-plane replicas a Ray cluster keeps for this
endpoint (controlplane/replicas.py), each reserving ``replica_resources`` on its node; 1 on one
machine, where the serving process serves it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from loopml.core.errors import InvalidInput
from loopml.core.resources import job_resources
from loopml.core.names import ENDPOINT_NAME_RE, VARIANT_NAME_RE, is_valid, endpoint_name as validate_name
from loopml.registry.refs import ModelRef, parse_model_ref

__all__ = ["ENDPOINT_NAME_RE", "validate_name", "parse_variant_flag", "normalise_spec",
           "resolve_spec", "model_ref_text", "PRIMARY", "SHADOW"]

PRIMARY = "primary"
SHADOW = "shadow"
MAX_BATCH_SIZE_LIMIT = 1024
MAX_DELAY_LIMIT_MS = 1000.0
_KEYS = {"variants", "shadow", "capture_percent", "max_batch_size", "max_batch_delay_ms",
         "multi_model", "model", "key_hashes", "replicas", "replica_resources"}
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_KEYS = 10
MAX_REPLICAS = 64


def _model_ref(ref: Any, where: str) -> dict[str, Any]:
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(f"{where}: a model reference MODEL:VERSION or MODEL@ALIAS is required")
    parsed = parse_model_ref(ref)
    if parsed.is_job:
        raise InvalidInput(f"{where}: an endpoint serves registered versions; register {parsed} first "
                           f"(loopml jobs register {parsed.job_id}) and use MODEL:VERSION")
    if parsed.is_latest:
        # a bare name would silently follow "newest": make the choice explicit
        raise InvalidInput(f"{where}: {ref!r} names no version; use {parsed.name}:VERSION or "
                           f"{parsed.name}@ALIAS (e.g. {parsed.name}@production)")
    return {"model": parsed.name, "version": parsed.version, "alias": parsed.alias}


def model_ref_text(v: dict[str, Any]) -> str:
    """A variant's ``model`` + ``version`` | ``alias`` as the reference users write."""
    return str(ModelRef(name=v["model"], version=v.get("version"), alias=v.get("alias") or None))


def parse_variant_flag(text: str) -> dict[str, Any]:
    """``NAME=MODEL:VERSION:WEIGHT`` or ``NAME=MODEL@ALIAS:WEIGHT`` (weight optional, default 1)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise InvalidInput(f"--variant {text!r}: use NAME=MODEL:VERSION:WEIGHT or "
                           "NAME=MODEL@ALIAS:WEIGHT")
    weight: Any = 1.0
    parts = rest.split(":")
    if "@" in parts[0]:
        if len(parts) > 2:
            raise InvalidInput(f"--variant {text!r}: use NAME=MODEL@ALIAS[:WEIGHT]")
        ref = parts[0]
        if len(parts) == 2:
            weight = parts[1]
    else:
        if len(parts) not in (2, 3):
            raise InvalidInput(f"--variant {text!r}: use NAME=MODEL:VERSION[:WEIGHT]")
        ref = ":".join(parts[:2])
        if len(parts) == 3:
            weight = parts[2]
    try:
        weight = float(weight)
    except ValueError:
        raise InvalidInput(f"--variant {text!r}: weight {weight!r} is not a number") from None
    return {"name": name, "ref": ref, "weight": weight}


def _number(value: Any, key: str, lo: float, hi: float, *, integer: bool = False) -> float | int:
    # details name the field: the CLI says its flag instead (--capture for capture_percent)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{key} must be a number, got {value!r}", field=key)
    if integer and int(value) != value:
        raise InvalidInput(f"{key} must be a whole number, got {value!r}", field=key)
    if not lo <= value <= hi:
        raise InvalidInput(f"{key} must be between {lo:g} and {hi:g}, got {value!r}", field=key)
    return int(value) if integer else float(value)


def _variant(raw: Any, i: int) -> dict[str, Any]:
    where = f"variants[{i}]"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object with name, model ref and weight")
    unknown = set(raw) - {"name", "ref", "model", "version", "alias", "weight"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}")
    name = raw.get("name", PRIMARY if i == 0 else None)
    if not isinstance(name, str) or not is_valid(VARIANT_NAME_RE, name) or name == SHADOW:
        raise InvalidInput(f"{where}: variant name {name!r} is invalid (letters, digits, hyphens; "
                           f"'{SHADOW}' is reserved)")
    if "ref" in raw:
        ref = _model_ref(raw["ref"], where)
    else:
        if not (raw.get("alias") or raw.get("version")):
            ref = _model_ref(raw.get("model"), where)
        else:
            ref = _model_ref(model_ref_text(raw), where)
    weight = _number(raw.get("weight", 1.0), f"{where}.weight", 0.0, 1e6)
    return {"name": name, **ref, "weight": weight}


def normalise_spec(raw: dict[str, Any], *, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a spec (API body / CLI flags) into its canonical form.

    ``model`` is shorthand for one variant ``primary``. With ``base`` (an update) keys absent
    from ``raw`` keep their current value.
    """
    if not isinstance(raw, dict):
        raise InvalidInput("an endpoint spec must be a JSON object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise InvalidInput(f"unknown endpoint field(s) {sorted(unknown)}; valid: {sorted(_KEYS)}")
    merged = dict(base or {})
    merged.update({k: v for k, v in raw.items() if v is not None or k == "shadow"})
    variants_raw = list(merged.get("variants") or [])
    if raw.get("model") is not None:
        if raw.get("variants") and any(v.get("name", PRIMARY) == PRIMARY for v in raw["variants"]
                                       if isinstance(v, dict)):
            raise InvalidInput("give the primary model either as 'model' or as a variant named "
                               f"'{PRIMARY}', not both")
        keep = [v for v in (raw.get("variants") or []) if isinstance(v, dict)]
        variants_raw = [{"name": PRIMARY, "ref": raw["model"], "weight": 1.0}, *keep]
    merged.pop("model", None)
    if isinstance(raw.get("replica_resources"), dict) and isinstance((base or {}).get("replica_resources"), dict):
        merged["replica_resources"] = {**base["replica_resources"], **raw["replica_resources"]}  # --replica-cpus alone
    if not variants_raw:
        raise InvalidInput("an endpoint needs a model: --model MODEL@ALIAS or MODEL:VERSION "
                           "(or at least one --variant)")
    if len(variants_raw) > 10:
        raise InvalidInput("an endpoint has at most 10 production variants")
    variants = [_variant(v, i) for i, v in enumerate(variants_raw)]
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise InvalidInput(f"variant names must be unique, got {names}")
    if sum(v["weight"] for v in variants) <= 0:
        raise InvalidInput("at least one variant needs a weight above 0")
    shadow = merged.get("shadow")
    if shadow is not None:
        if isinstance(shadow, str):
            shadow = {"ref": shadow}
        if not isinstance(shadow, dict):
            raise InvalidInput("shadow must be a model reference MODEL:VERSION or MODEL@ALIAS")
        ref = shadow.get("ref")
        if ref is None and shadow.get("model"):
            ref = model_ref_text(shadow) if (shadow.get("alias") or shadow.get("version")) \
                else shadow["model"]
        shadow = {"name": SHADOW, **_model_ref(ref, "shadow")}
    hashes = merged.get("key_hashes") or []
    if not isinstance(hashes, list) or len(hashes) > MAX_KEYS or not all(
            isinstance(h, str) and _KEY_HASH.match(h) for h in hashes):
        raise InvalidInput(f"key_hashes must be a list of at most {MAX_KEYS} SHA-256 hex digests")
    return {
        "variants": variants,
        "shadow": shadow,
        "key_hashes": list(dict.fromkeys(hashes)),
        "capture_percent": _number(merged.get("capture_percent", 0.0), "capture_percent", 0, 100),
        "max_batch_size": _number(merged.get("max_batch_size", 64), "max_batch_size", 1,
                                  MAX_BATCH_SIZE_LIMIT, integer=True),
        "max_batch_delay_ms": _number(merged.get("max_batch_delay_ms", 2.0), "max_batch_delay_ms",
                                      0, MAX_DELAY_LIMIT_MS),
        "multi_model": bool(merged.get("multi_model", False)),
        "replicas": _number(merged.get("replicas", 1), "replicas", 1, MAX_REPLICAS, integer=True),
        # what each replica's Ray actor reserves on its node (cpus, memory_gb, gpus)
        "replica_resources": job_resources("replica", merged.get("replica_resources")),
    }


def resolve_spec(spec: dict[str, Any],
                 lookup: Callable[[str, int | None, str | None], dict[str, Any]]) -> dict[str, Any]:
    """Concrete versions for every variant: ``lookup(model, version, alias)`` returns the model
    version record (raises NotFound). The result is what the serving process loads."""
    def one(v: dict[str, Any]) -> dict[str, Any]:
        rec = lookup(v["model"], v.get("version"), v.get("alias"))
        return {"name": v["name"], "model": v["model"], "version": rec["version"],
                "alias": v.get("alias"), "weight": v.get("weight", 0.0),
                "artifact_prefix": rec["artifact_prefix"], "kind": rec["kind"],
                "trusted": bool(rec.get("trusted"))}
    return {
        "variants": [one(v) for v in spec["variants"]],
        "shadow": one(spec["shadow"]) if spec.get("shadow") else None,
        "capture_percent": spec["capture_percent"],
        "max_batch_size": spec["max_batch_size"],
        "max_batch_delay_ms": spec["max_batch_delay_ms"],
        "multi_model": spec["multi_model"],
        "key_hashes": list(spec.get("key_hashes") or []),
    }
