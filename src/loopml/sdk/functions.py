"""SDK methods for functions: create, change, invoke, read invocations and logs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from loopml.core.errors import InvalidInput
from loopml.core.jobstatus import INVOCATION_TERMINAL
from loopml.sdk.files import zip_folder
from loopml.sdk.http import Connection, segment


def _code_payload(file: str | os.PathLike) -> tuple[str, bytes, str]:
    """A ``.py`` file as it is, a folder zipped."""
    path = Path(file).expanduser()
    if not path.exists():
        raise InvalidInput(f"function code {os.fspath(file)!r} does not exist")
    if path.is_dir():
        return f"{path.resolve().name or 'code'}.zip", zip_folder(path), "application/zip"
    return path.name, path.read_bytes(), "text/x-python"


class FunctionsAPI(Connection):
    def create_function(self, name: str, file: str | os.PathLike, handler: str | None = None,
                        timeout_s: float = 60, memory_mb: int = 512,
                        environment: dict[str, str] | None = None, replace: bool = False,
                        description: str | None = None, permissions: list[str] | None = None) -> dict[str, Any]:
        """Create (or with ``replace=True`` replace) a function from a ``.py`` file or a folder.

        Args:
            name: Lowercase letters, digits and ``-``.
            file: The handler's ``.py`` file, or a folder (zipped and uploaded).
            handler: ``MODULE.FUNCTION``; default ``<file stem>.handler`` (a folder with one
                top-level ``.py``: that module's ``handler``).
            timeout_s: The invocation is killed after this many seconds (``Function.Timeout``).
            memory_mb: Memory cap of the invocation's process (``Function.MemoryExceeded``).
            environment: Extra environment variables of the function's process.
            permissions: Its execution role, e.g. ``["datasets:write", "workflows:retrain:start"]``:
                each invocation's short-lived ``LOOPML_TOKEN`` may do exactly this (you must hold them).

        Returns:
            The function record (``name``, ``handler``, ``code_sha256``, ``timeout_s``, …).

        Example::

            c.create_function("resize", "resize.py", timeout_s=30, memory_mb=256)
        """
        payload = _code_payload(file)
        fields: dict[str, Any] = {"name": name, "timeout_s": str(timeout_s), "memory_mb": str(memory_mb),
                                  "replace": "true" if replace else "false"}
        if handler:
            fields["handler"] = handler
        if environment:
            fields["environment"] = json.dumps(environment)
        if description:
            fields["description"] = description
        if permissions:
            fields["permissions"] = json.dumps(list(permissions))
        return self._json("POST", "/functions", data=fields, files={"code": payload})

    def update_function(self, name: str, file: str | os.PathLike | None = None, *, handler: str | None = None,
                        timeout_s: float | None = None, memory_mb: int | None = None,
                        environment: dict[str, str | None] | None = None,
                        unset_environment: list[str] | None = None,
                        description: str | None = None, permissions: list[str] | None = None) -> dict[str, Any]:
        """Change a function; what is not given keeps its value.

        Args:
            file: New code (``.py`` or a folder); it keeps the current handler unless ``handler``
                is given.
            environment: Merged into the function's environment (``NAME: None`` removes one).
            unset_environment: Names to remove from the environment.
            permissions: Replaces the execution role (``[]``: none; None: keep).

        Example::

            c.update_function("resize", timeout_s=120, environment={"SIZE": "256"})
        """
        fields: dict[str, Any] = {}
        if handler:
            fields["handler"] = handler
        if timeout_s is not None:
            fields["timeout_s"] = str(timeout_s)
        if memory_mb is not None:
            fields["memory_mb"] = str(memory_mb)
        env: dict[str, Any] = dict(environment or {})
        env.update({key: None for key in unset_environment or []})
        if env:
            fields["environment"] = json.dumps(env)
        if description is not None:
            fields["description"] = description
        if permissions is not None:
            fields["permissions"] = json.dumps(list(permissions))
        files = {"code": _code_payload(file)} if file is not None else None
        return self._json("PATCH", f"/functions/{segment(name)}", data=fields, files=files)

    def functions(self) -> list[dict[str, Any]]:
        """All functions, by name."""
        return self._json("GET", "/functions")

    def function(self, name: str) -> dict[str, Any]:
        """One function's configuration."""
        return self._json("GET", f"/functions/{segment(name)}")

    def delete_function(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete a function (its invocation history stays). Refused (Conflict, the dependents in
        ``details``) while triggers or workflows use it, unless ``force``. Returns
        ``{"deleted": name, "broken": [dependents]}``."""
        return self._json("DELETE", f"/functions/{segment(name)}", params={"force": "true"} if force else None)

    def invoke_function(self, name: str, event: Any = None, mode: str = "sync") -> dict[str, Any]:
        """Invoke a function.

        ``mode="sync"`` waits for the end and returns the finished invocation record — also when
        the function failed: check ``record["status"]`` (``succeeded``/``failed``), ``result``,
        ``error_type``, ``error_message``, ``logs``. ``mode="async"`` returns the queued record.

        Example::

            r = c.invoke_function("resize", {"key": "images/cat.png"})
            print(r["status"], r["result"] if r["status"] == "succeeded" else r["error_message"])
        """
        if mode not in ("sync", "async"):
            raise InvalidInput(f"mode {mode!r} is not valid: use sync or async")
        # the server bounds a sync call by the function's timeout: no read timeout here
        timeout = httpx.Timeout(self.timeout, read=None) if mode == "sync" else None
        kwargs: dict[str, Any] = {"json": {"event": event, "mode": mode}}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return self._json("POST", f"/functions/{segment(name)}/invocations", **kwargs)

    def function_invocations(self, name: str, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Invocations of a function, newest first (optionally only one ``status``)."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._json("GET", f"/functions/{segment(name)}/invocations", params=params)

    def function_invocation(self, name: str, id: str) -> dict[str, Any]:
        """One invocation record."""
        return self._json("GET", f"/functions/{segment(name)}/invocations/{segment(id)}")

    def wait_function_invocation(self, name: str, id: str, timeout: float = 900,
                                 poll: float = 0.25) -> dict[str, Any]:
        """Poll an (async) invocation until it ended or ``timeout`` passed; the last record."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            record = self.function_invocation(name, id)
            if record["status"] in INVOCATION_TERMINAL or time.monotonic() >= deadline:
                return record
            time.sleep(poll)

    def function_logs(self, name: str, limit: int = 5) -> list[dict[str, Any]]:
        """The logs of the latest ``limit`` invocations, newest first: ``[{id, status, logs, …}]``."""
        return self._json("GET", f"/functions/{segment(name)}/logs", params={"limit": limit})
