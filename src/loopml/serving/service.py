"""Endpoint management as the API offers it: validate, resolve model references, record.

Nothing here talks to the serving process: it writes the desired state; the control plane
and the serving process converge on it (``ready`` in the record says when they have).
"""

from __future__ import annotations

import hashlib
import secrets
from functools import partial
from typing import Any, Callable

from loopml.core.errors import InvalidInput, NotFound
from loopml.platform import Platform
from loopml.registry.resolve import lookup
from loopml.serving.spec import MAX_KEYS, model_ref_text, normalise_spec, resolve_spec, validate_name
from loopml.store.endpoints_repo import model_refs

__all__ = ["create_endpoint", "update_endpoint", "delete_endpoint", "get_endpoint",
           "list_endpoints"]


def _resolve(platform: Platform, spec: dict[str, Any]) -> dict[str, Any]:
    resolved = resolve_spec(spec, partial(lookup, platform))
    kinds = {v["kind"] for v in model_refs(resolved)}
    if len(kinds) > 1:
        raise InvalidInput(f"the variants of an endpoint must take the same input; got models "
                           f"for {', '.join(sorted(kinds))} data")
    return resolved


def _check_replicas(platform: Platform, spec: dict[str, Any]) -> None:
    """Replicas are placed by Ray. On one machine the serving process already serves every
    endpoint (and LOOPML_SERVING_WORKERS spreads it over the cores): N more local processes on
    other ports would need a load balancer no one configures, so it is refused, not faked."""
    if spec["replicas"] > 1 and platform.settings.executor != "ray":
        raise InvalidInput(f"replicas={spec['replicas']} needs a Ray cluster (LOOPML_EXECUTOR=ray); on one machine "
                           "the serving process serves the endpoint (LOOPML_SERVING_WORKERS uses every core)",
                           field="replicas")


def _with_url(record: dict[str, Any], data_plane_url: str | None) -> dict[str, Any]:
    record["url"] = (f"{data_plane_url}/endpoints/{record['name']}/invocations"
                     if data_plane_url else None)
    return record


def _keys(raw: dict[str, Any], current: list[str]) -> tuple[dict[str, Any], str | None]:
    """``new_key``: make an API key (returned once; only its SHA-256 is kept);
    ``clear_keys``: revoke every key. Both are requests, not spec fields."""
    raw = dict(raw)
    new_key, clear = raw.pop("new_key", False), raw.pop("clear_keys", False)
    if "key_hashes" in raw:
        raise InvalidInput("key_hashes cannot be set directly; use new_key / clear_keys")
    hashes = [] if clear else list(current)
    key = None
    if new_key:
        if len(hashes) >= MAX_KEYS:
            raise InvalidInput(f"an endpoint has at most {MAX_KEYS} keys; clear them first")
        key = "lml_" + secrets.token_urlsafe(32)
        hashes.append(hashlib.sha256(key.encode()).hexdigest())
    if new_key or clear:
        raw["key_hashes"] = hashes
    return raw, key


def create_endpoint(platform: Platform, name: str, raw: dict[str, Any], *,
                    data_plane_url: str | None = None) -> dict[str, Any]:
    validate_name(name)
    raw, key = _keys(raw, [])
    spec = normalise_spec(raw)
    _check_replicas(platform, spec)
    record = platform.endpoints.create(name, spec, _resolve(platform, spec))
    if key:
        record["api_key"] = key
    return _with_url(record, data_plane_url)


def update_endpoint(platform: Platform, name: str, raw: dict[str, Any], *,
                    data_plane_url: str | None = None) -> dict[str, Any]:
    current = platform.endpoints.get(name)
    keys_only = bool(raw) and set(raw) <= {"new_key", "clear_keys"}
    raw, key = _keys(raw, current["spec"].get("key_hashes") or [])
    spec = normalise_spec(raw, base=current["spec"])
    _check_replicas(platform, spec)
    if keys_only:  # revoking keys must work even when a model reference no longer resolves
        resolved = {**current["resolved"], "key_hashes": spec["key_hashes"]}
    else:
        try:
            resolved = _resolve(platform, spec)
        except NotFound as exc:
            if raw.keys() & {"model", "variants", "shadow"}:
                raise  # the request itself named the missing model
            raise _gone(platform, name, spec, exc) from None
    record = platform.endpoints.update(name, spec, resolved, message="updated by request")
    if key:
        record["api_key"] = key
    return _with_url(record, data_plane_url)


def _gone(platform: Platform, name: str, spec: dict[str, Any], exc: NotFound) -> InvalidInput:
    """An update that leaves the models alone, of an endpoint whose alias or version was deleted
    since (``--force``): name what it follows and the way out."""
    for v in model_refs(spec):
        try:
            lookup(platform, v["model"], v.get("version"), v.get("alias"))
        except NotFound:
            return InvalidInput(f"endpoint {name} follows {model_ref_text(v)}: {exc.message}; point it at a "
                                "version with model=NAME:VERSION (or set the alias again)", field="model")
    return InvalidInput(exc.message)


def delete_endpoint(platform: Platform, name: str, *, check_unused: Callable[[str, str], list[dict[str, Any]]]
                    ) -> list[dict[str, Any]]:
    """Delete unless ``check_unused("endpoint", name)`` refuses (monitors watch it, workflows deploy
    to it: workflows.dependents knows, a context above this one, so the caller passes it in);
    returns the dependents it breaks."""
    platform.endpoints.get(name)
    broken = check_unused("endpoint", name)
    platform.endpoints.delete(name)
    return broken


def get_endpoint(platform: Platform, name: str, *,
                 data_plane_url: str | None = None) -> dict[str, Any]:
    from loopml.serving.scaling import autoscaling_summary  # its policy, desired count, decisions

    record = _with_url(platform.endpoints.get(name), data_plane_url)
    record["autoscaling"] = autoscaling_summary(platform, name)
    return record


def list_endpoints(platform: Platform, *, data_plane_url: str | None = None) -> list[dict[str, Any]]:
    return [_with_url(r, data_plane_url) for r in platform.endpoints.list()]
