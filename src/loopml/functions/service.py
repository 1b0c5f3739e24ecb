"""What the API calls: create/replace a function (code checked and stored first), delete one,
and check an invocation's event. The control plane runs invocations (controlplane.functions)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.jsonutil import loads_strict
from loopml.core.names import function_name
from loopml.functions.code import MAX_CODE_BYTES, prepare_code
from loopml.identity.service import check_function_permissions
from loopml.platform import Platform

MIN_MEMORY_MB, MAX_MEMORY_MB = 64, 65536
MAX_TIMEOUT_S = 24 * 3600.0
__all__ = ["MAX_CODE_BYTES", "check_event", "create_function", "delete_function", "parse_environment",
           "parse_permissions", "update_function", "validate_config"]
MAX_EVENT_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_ENV = ("LOOPML_API_URL", "LOOPML_TOKEN", "LOOPML_FUNCTION_NAME")


def validate_config(timeout_s: float, memory_mb: int, environment: dict[str, Any] | None) -> dict[str, str]:
    if not timeout_s > 0 or timeout_s > MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout {timeout_s:g} s is not valid: give more than 0 and at most "
                           f"{MAX_TIMEOUT_S:g} seconds")
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise InvalidInput(f"memory {memory_mb} MB is not valid: give {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB")
    env: dict[str, str] = {}
    for key, value in (environment or {}).items():
        if not ENV_KEY_RE.fullmatch(str(key)):
            raise InvalidInput(f"environment variable name {key!r} is not valid")
        if key in RESERVED_ENV:
            raise InvalidInput(f"environment variable {key} is set by LoopML and cannot be overridden")
        if isinstance(value, (dict, list)) or value is None:
            raise InvalidInput(f"environment variable {key}: the value must be a string, not {value!r}")
        env[str(key)] = str(value)
    return env


def _check_env_patch(patch: dict[str, Any]) -> dict[str, str | None]:
    """An environment change: NAME: value sets, NAME: null removes (JSON merge patch)."""
    kept = {k: v for k, v in patch.items() if v is not None}
    checked: dict[str, str | None] = dict(validate_config(1, MIN_MEMORY_MB, kept))
    for key in patch:
        if patch[key] is None:
            validate_config(1, MIN_MEMORY_MB, {key: ""})  # the name must still be a valid one
            checked[str(key)] = None
    return checked


def parse_environment(text: str | None) -> dict[str, Any]:
    """The API's ``environment`` form field: a JSON object (or empty)."""
    if not text:
        return {}
    try:
        env = loads_strict(text)  # a lone surrogate could never be an environment value
    except ValueError as exc:
        raise InvalidInput(f"environment is not valid JSON: {exc}") from None
    if not isinstance(env, dict):
        raise InvalidInput("environment must be a JSON object of NAME: value")
    return env


def parse_permissions(text: str | None) -> list[str] | None:
    """The API's ``permissions`` form field: a JSON list of permissions (absent: None)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"permissions is not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise InvalidInput('permissions must be a JSON list, e.g. ["datasets:write"]')
    return check_function_permissions(value, by=None)


def check_event(event: Any) -> Any:
    size = len(json.dumps(event))
    if size > MAX_EVENT_BYTES:
        raise InvalidInput(f"event is {size} bytes: the limit is {MAX_EVENT_BYTES} bytes")
    return event


def create_function(platform: Platform, name: str, *, filename: str, data: bytes,
                    handler: str | None = None, timeout_s: float = 60, memory_mb: int = 512,
                    environment: dict[str, Any] | None = None, description: str | None = None,
                    replace: bool = False, permissions: list[str] | None = None) -> dict[str, Any]:
    """Check name, config and code (handler present, no syntax error), store the code under
    ``functions/{name}/{sha16}/`` and write the record (the code first, then the record).
    ``permissions``: the execution role, what each invocation's short-lived token may do."""
    function_name(name)
    env = validate_config(timeout_s, memory_mb, environment)
    granted = check_function_permissions(permissions or [], by=None)
    bundle = prepare_code(filename, data, handler.strip() if handler else None)
    if not replace:
        try:
            platform.functions.get(name)
        except NotFound:
            pass  # a new name
        else:
            raise Conflict(f"function {name!r} already exists; use --replace (or "
                           "`loopml functions update`) to change it")
    sha = hashlib.sha256(bundle.data).hexdigest()
    key = f"functions/{name}/{sha[:16]}/{bundle.filename}"
    if not platform.artifacts.exists(key):
        platform.artifacts.put_bytes(key, bundle.data)
    return platform.functions.create(name, handler=bundle.handler, code_key=key, code_sha256=sha,
                                     timeout_s=timeout_s, memory_mb=memory_mb, environment=env,
                                     description=description, replace=replace, permissions=granted)


def update_function(platform: Platform, name: str, *, filename: str | None = None, data: bytes | None = None,
                    handler: str | None = None, timeout_s: float | None = None, memory_mb: int | None = None,
                    environment: dict[str, Any] | None = None,
                    description: str | None = None, permissions: list[str] | None = None) -> dict[str, Any]:
    """Change what is given and keep the rest (like Lambda's update-function-code/-configuration).

    ``environment`` is merged into the current one: ``NAME: value`` sets, ``NAME: None`` removes.
    New code keeps the current handler unless ``handler`` is given (refused when the code does
    not define it); a new handler alone is checked against the current code."""
    current = platform.functions.get(name)
    validate_config(current["timeout_s"] if timeout_s is None else timeout_s,
                    current["memory_mb"] if memory_mb is None else memory_mb, None)
    env_patch = _check_env_patch(environment or {})
    fields: dict[str, Any] = {}
    if data is not None or handler:
        if data is None:  # a new handler for the current code
            data = platform.artifacts.get_bytes(current["code_key"])
            filename = current["code_key"].rsplit("/", 1)[-1]
        wanted = handler.strip() if handler else current["handler"]
        try:
            bundle = prepare_code(filename or "handler.py", data, wanted)
        except InvalidInput as exc:
            if handler or not exc.message.startswith("handler "):
                raise
            raise InvalidInput(f"{exc.message} (the new code must define the current handler "
                               f"{current['handler']!r}, or give --handler)") from None
        sha = hashlib.sha256(bundle.data).hexdigest()
        key = f"functions/{name}/{sha[:16]}/{bundle.filename}"
        if not platform.artifacts.exists(key):
            platform.artifacts.put_bytes(key, bundle.data)
        fields.update(handler=bundle.handler, code_key=key, code_sha256=sha)
    if timeout_s is not None:
        fields["timeout_s"] = float(timeout_s)
    if memory_mb is not None:
        fields["memory_mb"] = int(memory_mb)
    if description is not None:
        fields["description"] = description or None
    if permissions is not None:  # the whole execution role ([] clears it)
        fields["permissions"] = check_function_permissions(permissions, by=None)
    if not fields and not env_patch:
        raise InvalidInput("nothing to change: give new code, handler, timeout, memory, environment, "
                           "permissions or description")
    return platform.functions.update(name, fields, env_patch)


def delete_function(platform: Platform, name: str, *, check_unused: Callable[[str, str], list[dict[str, Any]]]
                    ) -> list[dict[str, Any]]:
    """Delete the function unless ``check_unused("function", name)`` refuses (triggers or workflows
    use it: workflows.dependents knows, a context above this one, so the caller passes it in).
    Returns the dependents it breaks."""
    platform.functions.get(name)
    broken = check_unused("function", name)
    platform.functions.delete(name)
    try:
        platform.artifacts.delete(f"functions/{name}")
    except Exception:  # noqa: BLE001 - the record is gone; leftover code is harmless
        pass
    return broken
