"""Workflow management as the API offers it: validate definitions, start and stop executions.

A definition is checked when written (ASL rules, and every Task's Resource must be a LoopML
action), so an execution never starts from a machine that cannot run.
"""

from __future__ import annotations

from typing import Any, Callable

from loopml.core.errors import InvalidInput
from loopml.core.names import execution_name, workflow_name
from loopml.platform import Platform
from loopml.workflows.actions import check_resources, task_permissions
from loopml.workflows.asl import load_definition, parse_definition

def pretty_source(definition: dict[str, Any]) -> str:
    """The definition as readable YAML."""
    import yaml

    return yaml.safe_dump(definition, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _render_template(platform: Platform, template: str, params: dict[str, Any] | None) -> dict[str, Any]:
    from loopml.workflows import templates

    return templates.render(platform, template, dict(params or {}))


def create_workflow(platform: Platform, name: str, *, definition: dict[str, Any] | None = None,
                    source: str | None = None, description: str | None = None, replace: bool = False,
                    template: str | None = None, template_params: dict[str, Any] | None = None,
                    may: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Validate and store a workflow from a definition object, its JSON/YAML text or a template.
    ``may(state, permission)`` raises for a Task its maker may not do (the API's caller check)."""
    workflow_name(name)
    given = [what for what, value in (("definition", definition), ("source", source), ("template", template))
             if value is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of definition (an object), source (JSON or YAML text) or template"
                           + (f"; got {', '.join(given)}" if given else ""))
    if template is not None:
        definition = _render_template(platform, template, template_params)
        source = None
    elif source is not None:
        definition = parse_definition(source)
    if not isinstance(definition, dict):
        raise InvalidInput("definition: must be an object with StartAt and States")
    load_definition(definition)
    check_resources(definition)
    if may is not None:
        for state, needed in task_permissions(definition):
            may(state, needed)
    return platform.workflows.create(name, definition, source=source or pretty_source(definition),
                                     description=description, replace=replace)


def delete_workflow(platform: Platform, name: str, *, force: bool = False) -> list[dict[str, Any]]:
    """Delete unless triggers start it (``force``: anyway; running executions continue on their
    snapshot); returns the dependents it breaks."""
    from loopml.workflows.dependents import check_unused, workflow_dependents

    platform.workflows.get(name)
    broken = check_unused(f"workflow {name!r}", workflow_dependents(platform, name), force=force)
    platform.workflows.delete(name)
    return broken


def start_execution(platform: Platform, workflow: str, input: Any = None, *, name: str | None = None,
                    source: str | None = "api") -> dict[str, Any]:
    """A PENDING execution (the control plane's runner starts it within a tick)."""
    if name is not None:
        execution_name(name)
    return platform.workflows.start(workflow, {} if input is None else input, name=name, source=source)
