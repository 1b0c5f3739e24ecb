"""SDK methods for workflows and their executions.

Example::

    c.create_workflow("nightly", "nightly.asl.yaml")
    ex = c.start_execution("nightly", {"dataset": "mnist"})
    ex = c.wait_execution(ex["id"], timeout=3600)
    print(ex["status"], ex["output"])
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from loopml.core.errors import ExecutionTimeout, InvalidInput, LoopMLError
from loopml.core.jobstatus import EXECUTION_TERMINAL
from loopml.sdk.http import Connection, segment



def _definition_body(definition: Any) -> dict[str, Any]:
    """A dict is sent as is; a path to an existing file sends its text; other text is sent as source."""
    if definition is None:
        return {}
    if isinstance(definition, dict):
        return {"definition": definition}
    if isinstance(definition, os.PathLike) or (isinstance(definition, str) and "\n" not in definition
                                               and not definition.lstrip().startswith("{")):
        path = Path(definition).expanduser()
        if not path.is_file():
            raise InvalidInput(f"definition file {os.fspath(definition)!r} does not exist")
        return {"source": path.read_text(encoding="utf-8")}
    if isinstance(definition, str):
        return {"source": definition}
    raise InvalidInput(f"definition must be a dict, a file path or JSON/YAML text, not {type(definition).__name__}")


class WorkflowsAPI(Connection):
    def create_workflow(self, name: str, definition: dict[str, Any] | str | os.PathLike | None = None, *,
                        template: str | None = None, template_params: dict[str, Any] | None = None,
                        description: str | None = None, replace: bool = False) -> dict[str, Any]:
        """Create (or with ``replace=True`` change) a workflow in Amazon States Language.

        Args:
            definition: A dict, a path to a ``.json``/``.yaml`` file, or JSON/YAML text.
            template: A built-in template (e.g. ``"retrain"``) with ``template_params``.

        Example::

            c.create_workflow("hello", {"StartAt": "Hi", "States": {"Hi": {"Type": "Pass", "End": True}}})
        """
        body: dict[str, Any] = {"name": name, **_definition_body(definition), "replace": replace}
        if template is not None:
            body.update(template=template, template_params=template_params or {})
        if description is not None:
            body["description"] = description
        return self._json("POST", "/workflows", json=body)

    def workflows(self) -> list[dict[str, Any]]:
        """All workflows, by name."""
        return self._json("GET", "/workflows")

    def workflow(self, name: str) -> dict[str, Any]:
        """One workflow: ``definition`` and ``source`` (as written)."""
        return self._json("GET", f"/workflows/{segment(name)}")

    def delete_workflow(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete a workflow; executions already started finish on their snapshot. Refused
        (Conflict) while triggers start it, unless ``force``: ``{"deleted", "broken"}``."""
        return self._json("DELETE", f"/workflows/{segment(name)}", params={"force": "true"} if force else None)

    def start_execution(self, workflow: str, input: Any = None, name: str | None = None) -> dict[str, Any]:
        """Start an execution of ``workflow`` with ``input`` (default ``{}``); returns its record
        (``status`` PENDING until the control plane picks it up)."""
        body: dict[str, Any] = {"input": input}
        if name is not None:
            body["name"] = name
        return self._json("POST", f"/workflows/{segment(workflow)}/executions", json=body)

    def execution(self, execution_id: str) -> dict[str, Any]:
        """One execution: status, input, output, error, cause, current_state (failed_state once FAILED/TIMED_OUT)."""
        return self._json("GET", f"/executions/{segment(execution_id)}")

    def executions(self, workflow: str | None = None, status: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        """Executions, newest first, optionally of one workflow and/or with one status."""
        params: dict[str, Any] = {"limit": limit}
        if workflow:
            params["workflow"] = workflow
        if status:
            params["status"] = status
        return self._json("GET", "/executions", params=params)

    def execution_history(self, execution_id: str) -> list[dict[str, Any]]:
        """The execution's events in order: ``[{"seq", "type", "state", "details", "at"}, …]``."""
        return self._json("GET", f"/executions/{segment(execution_id)}/history")

    def stop_execution(self, execution_id: str) -> dict[str, Any]:
        """Ask the control plane to stop the execution (ABORTED; running jobs are cancelled)."""
        return self._json("POST", f"/executions/{segment(execution_id)}/stop")

    def wait_execution(self, execution_id: str, timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the execution ends; returns its record (raises ExecutionTimeout after ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.execution(execution_id)
            if record["status"] in EXECUTION_TERMINAL:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise ExecutionTimeout(f"execution {execution_id} is still {record['status']} after {timeout:g} s")
            time.sleep(poll)
