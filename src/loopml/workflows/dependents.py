"""What uses a function, a workflow or an endpoint — asked before deleting it (what follows a
model alias is the registry's: ``registry.aliases.followers``).

Deleting something in use is refused (409, the dependents in the body's ``details``) unless it is
forced, and then the answer lists what it breaks. Dependents are what LoopML can see statically:
triggers' targets, workflow Task resources (``loopml:function:NAME``) and ``loopml:deploy`` steps
whose ``endpoint`` parameter is written out (not one taken from the input with ``endpoint.$``),
monitors' endpoints.
"""

from __future__ import annotations

from typing import Any

from loopml.core.errors import Conflict
from loopml.platform import Platform
from loopml.workflows.actions import FUNCTION_PREFIX, task_states

Dependent = dict[str, Any]  # {"kind": "trigger"|"workflow"|"monitor"|"endpoint", "name", ["state"]}


def _workflow_tasks(platform: Platform, wanted) -> list[Dependent]:
    found: list[Dependent] = []
    for workflow in platform.workflows.list():
        for state, body in task_states(workflow["definition"]):
            if wanted(body):
                found.append({"kind": "workflow", "name": workflow["name"], "state": state})
    return found


def _triggers(platform: Platform, target_kind: str, name: str) -> list[Dependent]:
    return [{"kind": "trigger", "name": r["name"]} for r in platform.triggers.list()
            if r["target"] == {"kind": target_kind, "name": name}]


def function_dependents(platform: Platform, name: str) -> list[Dependent]:
    return _triggers(platform, "function", name) + _workflow_tasks(
        platform, lambda body: body.get("Resource") == FUNCTION_PREFIX + name)


def workflow_dependents(platform: Platform, name: str) -> list[Dependent]:
    return _triggers(platform, "workflow", name)


def endpoint_dependents(platform: Platform, name: str) -> list[Dependent]:
    monitors = [{"kind": "monitor", "name": m["name"]} for m in platform.monitors.list(endpoint=name)]
    return monitors + _workflow_tasks(platform, lambda body: body.get("Resource") == "loopml:deploy" and (
        (body.get("Parameters") or {}).get("endpoint") == name))


def describe(dependents: list[Dependent]) -> str:
    return ", ".join(f"{d['kind']} {d['name']}" + (f" (state {d['state']})" if d.get("state") else "")
                     for d in dependents)


def check_unused(what: str, dependents: list[Dependent], *, force: bool) -> list[Dependent]:
    """Refuse (Conflict, the dependents in ``details``) unless nothing uses it or ``force``;
    returns the dependents a forced delete breaks."""
    if dependents and not force:
        raise Conflict(f"{what} is used by {describe(dependents)}: change or delete them first, or delete "
                       "it anyway with --force (API: ?force=true), which breaks them", dependents=dependents)
    return dependents


_DEPENDENTS = {"function": function_dependents, "workflow": workflow_dependents, "endpoint": endpoint_dependents}


def guard(platform: Platform, *, force: bool):
    """``check(kind, name)`` for a service's delete: the domain services below workflows cannot ask
    this module themselves, so their callers (the API) hand them this."""
    def check(kind: str, name: str) -> list[Dependent]:
        return check_unused(f"{kind} {name!r}", _DEPENDENTS[kind](platform, name), force=force)
    return check
