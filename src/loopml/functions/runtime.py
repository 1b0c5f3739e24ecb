"""Run one invocation in its own process and say how it ended (the parent's side of runner.py).

The child runs in its own session (a process group we can kill whole). The parent enforces the
timeout and the memory cap: it polls the child (``os.wait4``) and the resident size of the
child's process tree (psutil) every few tens of milliseconds and kills the group past either
limit. The child's own high-water mark (VmHWM) is reported with its result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
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

LOG_CAP_BYTES = 256 * 1024
POLL_S = 0.05
HOST = socket.gethostname()
TIMEOUT, MEMORY, INTERRUPTED = "Function.Timeout", "Function.MemoryExceeded", "Function.Interrupted"


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


def function_env(settings: Settings, function: dict[str, Any]) -> dict[str, str]:
    """The "function" role's environment (API URL and token only: the server's database URL and
    artifact URI are not the function's business), its name, then its own variables."""
    env = settings.child_env("function")
    # never the server's token: the invocation's own short-lived one (controlplane/functions.py)
    env.pop("LOOPML_TOKEN", None)
    if function.get("invocation_token"):
        env["LOOPML_TOKEN"] = function["invocation_token"]
    env["LOOPML_FUNCTION_NAME"] = function["name"]
    env.update({str(k): str(v) for k, v in (function.get("environment") or {}).items()})
    return env


def _tree_rss_mb(proc: psutil.Process) -> float:
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    except psutil.Error:
        return 0.0


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_logs(path: Path, cap: int = LOG_CAP_BYTES) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size > cap:
                f.seek(size - cap)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > cap:
        text = f"[loopml] {size - cap} bytes of earlier logs truncated\n" + text.split("\n", 1)[-1]
    return text


def run_invocation(settings: Settings, artifacts: ArtifactStore, function: dict[str, Any],
                   invocation: dict[str, Any], *, stop: threading.Event | None = None,
                   on_start: Callable[[int], None] | None = None) -> Outcome:
    """Run ``invocation`` of ``function`` to its end; never raises for the function's faults."""
    timeout_s, memory_mb = float(function["timeout_s"]), int(function["memory_mb"])
    workdir = code_dir(settings, artifacts, function)
    run_dir = functions_home(settings) / ".runs" / invocation["id"]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log_path, result_path = run_dir / "output.log", run_dir / "result.json"
    started = time.monotonic()
    info = {"handler": function["handler"], "function_name": function["name"],
            "function_ref": f"loopml:function:{function['name']}", "request_id": invocation["id"],
            "memory_mb": memory_mb, "timeout_s": timeout_s, "deadline": time.time() + timeout_s,
            "source": invocation.get("source"), "event": invocation.get("event"),
            "result_path": str(result_path)}
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "loopml.functions.runner"], cwd=workdir,
                                    env=function_env(settings, function), stdin=subprocess.PIPE,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if on_start is not None:
            on_start(proc.pid)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(info).encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it died already: the outcome below says how
        ended, peak = _watch(proc, timeout_s, memory_mb, stop)
        duration_ms = (time.monotonic() - started) * 1000
        return _outcome(ended, peak, proc.returncode, timeout_s, memory_mb, duration_ms,
                        log_path, result_path, invocation["id"])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _watch(proc: subprocess.Popen, timeout_s: float, memory_mb: int,
           stop: threading.Event | None) -> tuple[str, float]:
    """Wait for the child; kill its group on a limit. Returns (how it ended, peak tree RSS MB)."""
    deadline = time.monotonic() + timeout_s
    try:
        ps: psutil.Process | None = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None  # gone already: the wait below reaps it
    peak, ended = 0.0, "exited"
    while True:
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        rss = _tree_rss_mb(ps) if ps is not None else 0.0
        peak = max(peak, rss)
        reason = None
        if rss > memory_mb:
            reason = MEMORY
        elif time.monotonic() > deadline:
            reason = TIMEOUT
        elif stop is not None and stop.is_set():
            reason = INTERRUPTED
        if reason:
            ended = reason
            kill_group(proc.pid)
            proc.wait()
            break
        time.sleep(POLL_S)
    kill_group(proc.pid)  # anything the handler started and left behind
    return ended, peak


def _outcome(ended: str, peak: float, returncode: int | None, timeout_s: float, memory_mb: int,
             duration_ms: float, log_path: Path, result_path: Path, request_id: str) -> Outcome:
    reported: dict[str, Any] | None = None
    if ended == "exited" and result_path.exists():
        try:
            reported = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            reported = None
    child_peak = (reported or {}).get("max_memory_mb")
    max_mb = max(peak, child_peak or 0.0) or None
    out = Outcome(succeeded=False, duration_ms=duration_ms, max_memory_mb=max_mb)
    note = ""
    if ended == TIMEOUT:
        out.error_type, out.error_message = TIMEOUT, f"timed out after {timeout_s:g} s"
        note = f"[loopml] {request_id} timed out after {timeout_s:g} s: process group killed"
    elif (reported or {}).get("error_type") == MEMORY:  # an allocation past the backstop was refused
        out.error_type = MEMORY
        out.error_message = f"exceeded its memory limit of {memory_mb} MB (an allocation was refused)"
    elif ended == MEMORY or (max_mb or 0) > memory_mb:
        out.error_type = MEMORY
        out.error_message = f"exceeded its memory limit of {memory_mb} MB" + \
            (f" (peak {max_mb:.0f} MB)" if max_mb else "")
        note = f"[loopml] {request_id} {out.error_message}: process group killed"
    elif ended == INTERRUPTED:
        out.error_type, out.error_message = INTERRUPTED, "the control plane stopped during the invocation"
    elif reported is None:
        how = f"signal {signal.Signals(-returncode).name}" if returncode and returncode < 0 \
            else f"exit code {returncode}"
        out.error_type = "Function.ProcessExited"
        out.error_message = f"the function's process ended ({how}) without a result"
    elif reported.get("ok"):
        out.succeeded, out.result = True, reported.get("result")
    else:
        out.error_type = str(reported.get("error_type") or "Function.Error")
        out.error_message = str(reported.get("error_message") or "")
    logs = read_logs(log_path)
    if note:
        logs += ("" if not logs or logs.endswith("\n") else "\n") + note + "\n"
    report = (f"[loopml] REPORT {request_id} duration {duration_ms:.1f} ms, "
              f"max memory {max_mb or 0:.0f} of {memory_mb} MB")
    out.logs = logs + ("" if not logs or logs.endswith("\n") else "\n") + report + "\n"
    return out


def pid_is_runner(pid: int | None) -> bool:
    """Whether ``pid`` is (still) an invocation process on this machine."""
    if not pid:
        return False
    try:
        return "loopml.functions.runner" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False

