"""The supervisor of one invocation: ``python -m loopml.functions.supervisor SPOOL/ID.in.json``.

Started by the control plane in its own session, it outlives a control plane killed with
``kill -9``: it starts the sandboxed runner, enforces the timeout and the memory cap (resident
size of every descendant, polled), kills every descendant at the end, and writes the outcome to
the spool file ``SPOOL/ID.json`` (atomically). The control plane that started it — or the next
one, after a restart — records that outcome. SIGTERM (the control plane stopping) ends the
invocation as ``Function.Interrupted``. Standard library and psutil only: it starts fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

LOG_CAP_BYTES = 256 * 1024
RESULT_CAP_BYTES = 16 * 1024 * 1024
POLL_S = 0.05
TIMEOUT, MEMORY, INTERRUPTED = "Function.Timeout", "Function.MemoryExceeded", "Function.Interrupted"
PR_SET_CHILD_SUBREAPER = 36


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


def _become_subreaper() -> None:
    """Orphaned descendants (e.g. a handler's ``setsid`` child) become ours, so we can find and
    kill them; the PID namespace does this in bwrap mode, this covers the fallback."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _tree_rss_mb() -> float:
    total = 0
    for child in _descendants():
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def kill_descendants(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox (its PID namespace dies with its first process) and every descendant
    still around, until none is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(50):
        left = _descendants()
        if not left:
            break
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=0.2)
    if proc.returncode is None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _watch(proc: subprocess.Popen, timeout_s: float, memory_mb: int, stop: threading.Event) -> tuple[str, float]:
    deadline = time.monotonic() + timeout_s
    peak, ended = 0.0, "exited"
    while True:
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        rss = _tree_rss_mb()
        peak = max(peak, rss)
        reason = MEMORY if rss > memory_mb else TIMEOUT if time.monotonic() > deadline else \
            INTERRUPTED if stop.is_set() else None
        if reason:
            ended = reason
            kill_descendants(proc)
            break
        time.sleep(POLL_S)
    return ended, peak


def outcome(ended: str, peak: float, returncode: int | None, timeout_s: float, memory_mb: int,
            duration_ms: float, logs: str, reported: dict[str, Any] | None, request_id: str) -> dict[str, Any]:
    """The invocation's outcome: ``succeeded`` plus the record's fields."""
    if ended != "exited":
        reported = None
    child_peak = (reported or {}).get("max_memory_mb")
    max_mb = max(peak, child_peak or 0.0) or None
    out: dict[str, Any] = {"succeeded": False, "result": None, "error_type": None, "error_message": None}
    note = ""
    if ended == TIMEOUT:
        out["error_type"], out["error_message"] = TIMEOUT, f"timed out after {timeout_s:g} s"
        note = f"[loopml] {request_id} timed out after {timeout_s:g} s: every process of the invocation killed"
    elif (reported or {}).get("error_type") == MEMORY:  # an allocation past the backstop was refused
        out["error_type"] = MEMORY
        out["error_message"] = f"exceeded its memory limit of {memory_mb} MB (an allocation was refused)"
    elif ended == MEMORY or (max_mb or 0) > memory_mb:
        out["error_type"] = MEMORY
        out["error_message"] = f"exceeded its memory limit of {memory_mb} MB" + \
            (f" (peak {max_mb:.0f} MB)" if max_mb else "")
        note = f"[loopml] {request_id} {out['error_message']}: every process of the invocation killed"
    elif ended == INTERRUPTED:
        out["error_type"], out["error_message"] = INTERRUPTED, "the control plane stopped during the invocation"
    elif reported is None:
        how = f"signal {signal.Signals(-returncode).name}" if returncode and returncode < 0 \
            else f"exit code {returncode}"
        out["error_type"] = "Function.ProcessExited"
        out["error_message"] = f"the function's process ended ({how}) without a result"
    elif reported.get("ok"):
        out["succeeded"], out["result"] = True, reported.get("result")
    else:
        out["error_type"] = str(reported.get("error_type") or "Function.Error")
        out["error_message"] = str(reported.get("error_message") or "")
    if note:
        logs += ("" if not logs or logs.endswith("\n") else "\n") + note + "\n"
    report = (f"[loopml] REPORT {request_id} duration {duration_ms:.1f} ms, "
              f"max memory {max_mb or 0:.0f} of {memory_mb} MB")
    out["logs"] = logs + ("" if not logs or logs.endswith("\n") else "\n") + report + "\n"
    out["duration_ms"] = round(duration_ms, 3)
    out["max_memory_mb"] = None if max_mb is None else round(max_mb, 1)
    return out


def write_spool(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def supervise(spec: dict[str, Any]) -> dict[str, Any]:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _become_subreaper()
    log_path = Path(spec["log_path"])
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []

    def read_result() -> None:
        size = 0
        with os.fdopen(read_fd, "rb") as f:
            while chunk := f.read(65536):
                size += len(chunk)
                if size <= RESULT_CAP_BYTES:
                    chunks.append(chunk)

    reader = threading.Thread(target=read_result, daemon=True)
    reader.start()
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(spec["argv"], cwd=spec.get("cwd"), env=spec["env"], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                                start_new_session=True)
    os.close(write_fd)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**spec["info"], "result_fd": write_fd}).encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # it died already: the outcome says how
    ended, peak = _watch(proc, float(spec["timeout_s"]), int(spec["memory_mb"]), stop)
    kill_descendants(proc)  # anything the handler started and left behind
    duration_ms = (time.monotonic() - started) * 1000
    reader.join(timeout=10)
    reported: dict[str, Any] | None = None
    try:
        reported = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        reported = None
    if not isinstance(reported, dict):
        reported = None
    return outcome(ended, peak, proc.returncode, float(spec["timeout_s"]), int(spec["memory_mb"]), duration_ms,
                   read_logs(log_path), reported, spec["invocation_id"])


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        record = supervise(spec)
    except Exception as exc:  # noqa: BLE001 - always leave an outcome for the control plane
        record = {"succeeded": False, "result": None, "error_type": "Function.Error",
                  "error_message": f"LoopML could not run the invocation: {type(exc).__name__}: {str(exc)[:300]}",
                  "logs": "", "duration_ms": 0.0, "max_memory_mb": None}
    record["invocation_id"] = spec["invocation_id"]
    write_spool(Path(spec["spool_path"]), record)
    for path in spec.get("cleanup") or []:
        _remove_tree(path)
    return 0


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
