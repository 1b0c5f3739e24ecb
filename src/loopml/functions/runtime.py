"""Start one invocation and read how it ended (the control plane's side of supervisor.py).

Each invocation has a supervisor process in its own session (``functions.supervisor``): it runs
the sandboxed runner (``functions.sandbox``), enforces the timeout and the memory cap, kills every
descendant and spools the outcome to ``{home}/functions/.spool/ID.json``. The control plane
waits for it and records the spooled outcome; one restarted meanwhile finds the supervisor still
running (and waits for it) or its outcome spooled (and records it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from loopml.artifacts.store import ArtifactStore
from loopml.core.settings import Settings
from loopml.functions.code import zip_members
from loopml.functions.sandbox import BASE_ENV, Sandbox, bwrap_argv, function_env, package_root
from loopml.functions.sandbox import detect as detect_sandbox
from loopml.functions.supervisor import INTERRUPTED, LOG_CAP_BYTES, MEMORY, TIMEOUT, read_logs

__all__ = ["HOST", "INTERRUPTED", "LOG_CAP_BYTES", "MEMORY", "TIMEOUT", "Outcome", "collect", "detect_sandbox",
           "find_supervisor", "forget", "kill_group", "launch", "pid_is_runner", "read_logs", "run_invocation", "spooled_ids",
           "supervisor_alive", "wait_supervisor"]

POLL_S = 0.05
HOST = socket.gethostname()


@dataclass
class Outcome:
    succeeded: bool
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    logs: str = ""
    duration_ms: float = 0.0
    max_memory_mb: float | None = None

    def fields(self) -> dict[str, Any]:
        """The invocation record's fields for this outcome."""
        return {"result": self.result, "error_type": self.error_type, "error_message": self.error_message,
                "logs": self.logs, "duration_ms": round(self.duration_ms, 3),
                "max_memory_mb": None if self.max_memory_mb is None else round(self.max_memory_mb, 1)}


def functions_home(settings: Settings) -> Path:
    return settings.home / "functions"


def code_dir(settings: Settings, artifacts: ArtifactStore, function: dict[str, Any]) -> Path:
    """The function's code unpacked under ``{home}/functions/{name}/{sha16}/code`` (cached:
    written to a temporary folder and renamed into place, so concurrent invocations agree)."""
    base = functions_home(settings) / function["name"] / function["code_sha256"][:16]
    target = base / "code"
    if target.is_dir():
        return target
    data = artifacts.get_bytes(function["code_key"])
    tmp = base / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        if function["code_key"].endswith(".zip"):
            for rel, content in zip_members(data).items():
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        else:
            (tmp / Path(function["code_key"]).name).write_bytes(data)
        try:
            tmp.rename(target)
        except OSError:  # someone else unpacked it first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def spool_dir(settings: Settings) -> Path:
    """Where supervisors leave their instructions (ID.in.json) and outcomes (ID.json)."""
    return functions_home(settings) / ".spool"


def _readable(tree: Path) -> None:
    """The sandbox's user (not the owner) reads the code: world-readable whatever the umask."""
    for dirpath, dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def _hidden_paths(settings: Settings) -> list[str]:
    """What a function must never see, even if a path it is given holds it."""
    paths = [str(settings.home)]
    db = settings.resolved_database_url
    if db.startswith("sqlite:///"):
        paths.append(db[len("sqlite:///"):])
    art = settings.resolved_artifact_uri
    if not art.startswith("s3://"):
        paths.append(art[len("file://"):] if art.startswith("file://") else art)
    return paths


def _processes_of(uid: int) -> int:
    count = 0
    for p in psutil.process_iter(["uids"]):
        try:
            count += p.info["uids"] is not None and p.info["uids"].real == uid
        except psutil.Error:
            pass
    return count


def launch(settings: Settings, artifacts: ArtifactStore, function: dict[str, Any], invocation: dict[str, Any],
           *, token: str | None, sandbox: Sandbox | None = None) -> int:
    """Start the invocation's supervisor (its own session: it survives a control plane killed
    with ``kill -9``) and return its pid. ``token`` is the LOOPML_TOKEN the function gets."""
    sandbox = sandbox or detect_sandbox()
    timeout_s, memory_mb = float(function["timeout_s"]), int(function["memory_mb"])
    workdir = code_dir(settings, artifacts, function)
    _readable(workdir)
    inv_id = invocation["id"]
    run_dir = functions_home(settings) / ".runs" / inv_id
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spool = spool_dir(settings)
    spool.mkdir(parents=True, exist_ok=True)
    (spool / f"{inv_id}.json").unlink(missing_ok=True)
    api_url = settings.child_env("function", base={})["LOOPML_API_URL"]
    env = function_env(function, api_url=api_url, token=token)
    command = [sys.executable, "-m", "loopml.functions.runner"]
    cleanup = [str(run_dir)]
    max_processes = sandbox.max_processes
    if sandbox.mode == "bwrap":
        argv, cwd = bwrap_argv(workdir, command, _hidden_paths(settings), root=os.geteuid() == 0), None
    else:  # the function user may not traverse LoopML's home: it gets its own copy of the code
        task = Path(tempfile.mkdtemp(prefix=f"loopml-task-{inv_id}-"))
        shutil.copytree(workdir, task, dirs_exist_ok=True)
        _readable(task)
        argv, cwd = command, str(task)
        cleanup.append(str(task))
    if sandbox.run_as is None:  # no user of its own: RLIMIT_NPROC counts all of the server user's processes
        max_processes += _processes_of(os.getuid())
    info = {"handler": function["handler"], "function_name": function["name"],
            "function_ref": f"loopml:function:{function['name']}", "request_id": inv_id,
            "memory_mb": memory_mb, "timeout_s": timeout_s, "deadline": time.time() + timeout_s,
            "source": invocation.get("source"), "event": invocation.get("event"),
            "run_as": list(sandbox.run_as) if sandbox.run_as else None, "max_processes": max_processes}
    spec = {"invocation_id": inv_id, "argv": argv, "cwd": cwd, "env": env, "info": info,
            "timeout_s": timeout_s, "memory_mb": memory_mb, "log_path": str(run_dir / "output.log"),
            "spool_path": str(spool / f"{inv_id}.json"), "cleanup": cleanup}
    spec_path = spool / f"{inv_id}.in.json"
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the token
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    # -S: the supervisor needs only the standard library and loopml (PYTHONPATH), not site-packages
    proc = subprocess.Popen([sys.executable, "-S", "-m", "loopml.functions.supervisor", str(spec_path)],
                            env={"PATH": BASE_ENV["PATH"], "PYTHONPATH": str(package_root()),
                                 "PYTHONUNBUFFERED": "1", "LOOPML_CONFIG": os.devnull},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _children[proc.pid] = proc  # reaped by wait_supervisor (no zombie, no ResourceWarning)
    return proc.pid


_children: dict[int, subprocess.Popen] = {}


def wait_supervisor(pid: int, stop: threading.Event | None = None) -> None:
    """Until the supervisor ``pid`` ended (ours, or one a previous control plane started).
    ``stop`` set: ask it to end the invocation (recorded as interrupted)."""
    asked = False
    while True:
        proc = _children.get(pid)
        if proc is not None:
            try:
                proc.wait(timeout=POLL_S)  # returns as soon as it ends
                _children.pop(pid, None)
                return
            except subprocess.TimeoutExpired:
                pass
        elif not supervisor_alive(pid):
            return
        if stop is not None and stop.is_set() and not asked:
            asked = True
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if proc is None:
            time.sleep(POLL_S)


def collect(settings: Settings, invocation_id: str) -> Outcome | None:
    """The outcome a supervisor spooled for ``invocation_id`` (None: there is none)."""
    path = spool_dir(settings) / f"{invocation_id}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Outcome(succeeded=bool(record.get("succeeded")), result=record.get("result"),
                   error_type=record.get("error_type"), error_message=record.get("error_message"),
                   logs=record.get("logs") or "", duration_ms=float(record.get("duration_ms") or 0.0),
                   max_memory_mb=record.get("max_memory_mb"))


def forget(settings: Settings, invocation_id: str) -> None:
    """Remove the spool files of an invocation whose outcome is recorded."""
    for name in (f"{invocation_id}.json", f"{invocation_id}.in.json"):
        (spool_dir(settings) / name).unlink(missing_ok=True)
    shutil.rmtree(functions_home(settings) / ".runs" / invocation_id, ignore_errors=True)


def spooled_ids(settings: Settings) -> list[str]:
    """Invocations with a spooled outcome (e.g. finished while the control plane was down)."""
    try:
        return sorted(p.name[:-len(".json")] for p in spool_dir(settings).glob("*.json")
                      if not p.name.endswith(".in.json"))
    except OSError:
        return []


def run_invocation(settings: Settings, artifacts: ArtifactStore, function: dict[str, Any],
                   invocation: dict[str, Any], *, token: str | None = None, sandbox: Sandbox | None = None,
                   stop: threading.Event | None = None, on_start: Callable[[int], None] | None = None) -> Outcome:
    """Run ``invocation`` of ``function`` to its end; never raises for the function's faults.

    The spooled outcome stays on disk: the caller ``forget``s it once the outcome is recorded, so
    a control plane killed in between finds it after the restart (and does not run it again)."""
    pid = launch(settings, artifacts, function, invocation, token=token, sandbox=sandbox)
    if on_start is not None:
        on_start(pid)
    wait_supervisor(pid, stop)
    outcome = collect(settings, invocation["id"])
    if outcome is None and stop is not None and stop.is_set():  # stopped before it could spool
        return Outcome(False, error_type=INTERRUPTED, error_message="the control plane stopped during the invocation")
    if outcome is None:
        return Outcome(False, error_type="Function.Error",
                       error_message="the invocation's supervisor ended without an outcome")
    return outcome


def supervisor_alive(pid: int | None, invocation_id: str | None = None) -> bool:
    """Whether ``pid`` is (still) the supervisor of an invocation (of ``invocation_id``) here."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "loopml.functions.supervisor" in cmd and (invocation_id is None or f"{invocation_id}.in.json" in cmd)


def find_supervisor(invocation_id: str) -> int | None:
    """The pid of a live supervisor of ``invocation_id`` (e.g. started by a control plane killed
    before it could record the pid), else None."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "loopml.functions.supervisor" in cmd and any(a.endswith(f"/{invocation_id}.in.json") for a in cmd):
            if supervisor_alive(proc.pid, invocation_id):
                return proc.pid
    return None


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pid_is_runner(pid: int | None) -> bool:
    """Whether ``pid`` is (still) an invocation process on this machine."""
    if not pid:
        return False
    try:
        return "loopml.functions.runner" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False

