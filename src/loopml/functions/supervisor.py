"""The supervisor of one invocation: ``python -m loopml.functions.supervisor SPOOL/ID.in.json``.

Started by the control plane in its own session, it outlives a control plane killed with
``kill -9``: it starts the sandboxed runner, enforces the timeout and the memory cap (resident
size of every descendant, polled), kills every descendant at the end, and writes the outcome to
the spool file ``SPOOL/ID.json`` (atomically). The control plane that started it — or the next
one, after a restart — records that outcome. SIGTERM (the control plane stopping) ends the
invocation as ``Function.Interrupted``. Standard library only, read from ``/proc`` directly (no
psutil, no pathlib): one is started per invocation, so its start-up is on every invocation's path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

LOG_CAP_BYTES = 256 * 1024
RESULT_CAP_BYTES = 16 * 1024 * 1024
POLL_S = 0.05
TIMEOUT, MEMORY, INTERRUPTED = "Function.Timeout", "Function.MemoryExceeded", "Function.Interrupted"
PR_SET_CHILD_SUBREAPER = 36


def read_logs(path: str | os.PathLike, cap: int = LOG_CAP_BYTES) -> str:
    try:
        size = os.stat(path).st_size
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
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), fields[0].decode()
    except (OSError, IndexError, ValueError):
        return None


def _descendants() -> list[int]:
    """Every live (non-zombie) descendant of this process, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs (not Linux): the process group kill is all there is
        return []
    for entry in entries:
        if entry.isdigit():
            st = _stat(entry)
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                if st[1] == "Z":
                    zombies.add(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if p not in zombies]


def _tree_rss_mb() -> float:
    total = 0
    for pid in _descendants():
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total / 2**20


def _reap(proc: subprocess.Popen) -> None:
    """Collect exited children (orphans we adopted as subreaper, and the sandbox itself)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == proc.pid and proc.returncode is None:
            proc.returncode = os.waitstatus_to_exitcode(status)


def kill_descendants(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox (its PID namespace dies with its first process) and every descendant
    still around, until none is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(100):
        _reap(proc)
        left = _descendants()
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
    _reap(proc)


def _watch(proc: subprocess.Popen, timeout_s: float, memory_mb: int, stop: threading.Event) -> tuple[str, float]:
    deadline = time.monotonic() + timeout_s
    peak, ended, delay, rss, next_scan = 0.0, "exited", 0.002, 0.0, time.monotonic() + POLL_S
    while True:
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        now = time.monotonic()
        if now >= next_scan:  # a /proc scan costs more than a wait4: at most every POLL_S
            rss, next_scan = _tree_rss_mb(), now + POLL_S
            peak = max(peak, rss)
        reason = MEMORY if rss > memory_mb else TIMEOUT if now > deadline else \
            INTERRUPTED if stop.is_set() else None
        if reason:
            ended = reason
            kill_descendants(proc)
            break
        time.sleep(delay)
        delay = min(POLL_S, delay * 1.5)  # a short invocation is seen ending at once
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


def write_spool(path: str, record: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def supervise(spec: dict[str, Any]) -> dict[str, Any]:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _become_subreaper()
    log_path = spec["log_path"]
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
        info = {**spec["info"], "result_fd": write_fd}
        if spec.get("cwd"):  # the fallback: no bwrap --die-with-parent to end it with us
            info["supervisor_pid"] = os.getpid()
        proc.stdin.write(json.dumps(info).encode())
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
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        record = supervise(spec)
    except Exception as exc:  # noqa: BLE001 - always leave an outcome for the control plane
        record = {"succeeded": False, "result": None, "error_type": "Function.Error",
                  "error_message": f"LoopML could not run the invocation: {type(exc).__name__}: {str(exc)[:300]}",
                  "logs": "", "duration_ms": 0.0, "max_memory_mb": None}
    record["invocation_id"] = spec["invocation_id"]
    write_spool(spec["spool_path"], record)
    for path in spec.get("cleanup") or []:
        _remove_tree(path)
    return 0


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
