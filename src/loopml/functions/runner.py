"""The process of one invocation: ``python -m loopml.functions.runner`` (cwd = the code folder).

Reads its instructions as JSON on stdin (handler, event, context fields, memory cap, the user to
run as), drops to that unprivileged user with a process-count limit before any user code is
imported, runs ``handler(event, context)`` and writes the outcome as JSON to the file descriptor
its supervisor passed (``result_fd``, a pipe: the function needs no writable path of LoopML's);
stdout/stderr are the invocation's logs. Only the standard library is imported up front so a
function starts fast; the LoopML client is built on first use of ``context.client``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any

MB = 1024 * 1024
# Backstop above the cap for what the interpreter maps but does not touch (arenas, libraries):
# the parent watches the resident size and enforces the cap itself; this limit only stops a
# single huge allocation from swamping the machine before the parent sees it.
DATA_HEADROOM_MB = 128
PR_SET_PDEATHSIG = 1


def _peak_rss_mb() -> float | None:
    # VmHWM is this process's own high-water mark (ru_maxrss would include the parent's, inherited at fork)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Context:
    """What a handler gets as ``context`` (AWS Lambda's names, plus ``client`` and ``function_ref``)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.request_id: str = info["request_id"]
        self.aws_request_id: str = self.request_id
        self.function_name: str = info["function_name"]
        self.function_ref: str = info.get("function_ref") or f"loopml:function:{self.function_name}"
        self.invoked_function_arn: str = self.function_ref
        self.function_version = "$LATEST"
        self.memory_limit_in_mb: int = int(info["memory_mb"])
        self.timeout_s: float = float(info["timeout_s"])
        self.source: str | None = info.get("source")
        self._deadline: float = float(info["deadline"])  # wall clock (time.time()), set by the parent
        self.logger = _make_logger(self.function_name, self.request_id)
        self._client: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))

    @property
    def client(self) -> Any:
        """A ``loopml.Client`` for the control plane that runs this function (LOOPML_API_URL/TOKEN)."""
        if self._client is None:
            # imported by name: the function's process is a client of the control plane
            self._client = importlib.import_module("loopml.sdk.client").Client()
        return self._client


def _make_logger(function_name: str, request_id: str) -> logging.Logger:
    logger = logging.getLogger(f"loopml.function.{function_name}")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {request_id} %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _limit_memory(memory_mb: int) -> None:
    limit = (memory_mb + DATA_HEADROOM_MB) * MB
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        pass  # no backstop on this platform; the parent's watch still applies


class HandlerNotFound(Exception):
    pass


def _load_handler(handler: str) -> Any:
    module_name, _, attr = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerNotFound(f"module {module_name!r} not found in the function's code") from None
        raise
    fn = getattr(module, attr, None)
    if fn is None:
        raise HandlerNotFound(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise HandlerNotFound(f"{handler!r} is not callable")
    return fn


def _write_result(fd: int, outcome: dict[str, Any]) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(outcome, f)


def _drop_privileges(run_as: list[int] | None, max_processes: int | None) -> None:
    """Become the unprivileged function user (root is exempt from RLIMIT_NPROC) and cap the
    number of processes it may have: a fork bomb fails with EAGAIN instead of filling the machine."""
    if run_as:
        uid, gid = run_as
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if max_processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))


def _die_with_supervisor(supervisor_pid: int | None) -> None:
    """Without bubblewrap (which does this): end if the supervisor dies. Set after the user
    change, which clears it; a supervisor already gone means nobody would read the result."""
    if not supervisor_pid:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:
        os._exit(1)


def _failure(error_type: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error_type": error_type, "error_message": message}


def run(info: dict[str, Any]) -> dict[str, Any]:
    """Load and call the handler; the outcome as a JSON-able dict (never raises)."""
    sys.path.insert(0, os.getcwd())
    try:
        fn = _load_handler(info["handler"])
    except HandlerNotFound as exc:
        return _failure("Function.HandlerNotFound", str(exc))
    except MemoryError:
        return _failure("Function.MemoryExceeded", "out of memory while importing the handler's module")
    except BaseException as exc:  # noqa: BLE001 - the user's module failed to import
        traceback.print_exc()
        return _failure("Function.ImportError", f"importing {info['handler'].rpartition('.')[0]!r} failed: "
                                                f"{type(exc).__name__}: {exc}")
    context = Context(info)
    try:
        result = fn(info.get("event"), context)
    except MemoryError:
        traceback.print_exc()
        return _failure("Function.MemoryExceeded",
                        f"the handler ran out of memory (limit {context.memory_limit_in_mb} MB)")
    except SystemExit as exc:
        return _failure("SystemExit", f"the handler called sys.exit({exc.code!r})")
    except BaseException as exc:  # noqa: BLE001 - every failure is the invocation's outcome
        traceback.print_exc()
        return _failure(type(exc).__name__, str(exc))
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        return _failure("Function.ResultNotJSON", f"the handler's result is not JSON-serialisable: {exc}")
    return {"ok": True, "result": result}


def main() -> int:
    info = json.loads(sys.stdin.buffer.read() or b"{}")
    result_fd = int(info.pop("result_fd"))
    _drop_privileges(info.get("run_as"), info.get("max_processes"))
    _die_with_supervisor(info.get("supervisor_pid"))
    _limit_memory(int(info["memory_mb"]))
    outcome = run(info)
    sys.stdout.flush()
    sys.stderr.flush()
    outcome["max_memory_mb"] = _peak_rss_mb()
    _write_result(result_fd, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
