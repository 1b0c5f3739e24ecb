"""The LocalExecutor's spare workers: processes that have already imported TensorFlow/Keras and
the job runners (``python -m loopml.jobs.warm``), each waiting on its stdin for one job.

``take(job_id, env)`` hands a job to a live spare (a ready one first): the spare's output file
is renamed to the job's (the open descriptor follows, so the job's output file holds everything
the process ever printed, as for a cold worker), a pid file records which process runs the job
(its command line does not name it: see ``pid_runs_job``), then the handover line is written.
``refill()`` keeps ``count`` spares: it replaces used and dead ones, backing off when spares die
before they are ready (a broken installation must not become a fork loop). ``shutdown()`` ends
idle spares only; a spare that has a job is that job's worker and is left running.

Cost: an idle spare holds its imports in memory (measured ~0.7 GB RSS with TensorFlow 2.21,
Keras 3, ONNX Runtime and tf2onnx; ~0.78 GB after the training warm-up) and spends a few CPU
seconds importing and warming up after each handover.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loopml.jobs.logtail import read_tail

log = logging.getLogger("loopml.jobs")
MAX_BACKOFF_S = 60.0
# after a handover the replacement spare waits this long before it starts importing: its few CPU
# seconds of imports would otherwise compete with the job's own start on a small machine (measured
# on 2 cores: submit → first batch 2.55 s median with an immediate refill; see docs/benchmarks.md)
REFILL_AFTER_HANDOVER_S = 3.0


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid, it names one
    process for good (pids are reused, start times of a reused pid differ). None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def pid_file(log_dir: Path, job_id: str) -> Path:
    return log_dir / f"{job_id}.pid"


def pid_file_names(log_dir: Path, job_id: str, pid: int) -> bool:
    """Whether the job's pid file (written at handover) names this very process."""
    try:
        recorded_pid, started = pid_file(log_dir, job_id).read_text().split()
    except (OSError, ValueError):
        return False
    return int(recorded_pid) == pid and started == process_start_time(pid)


@dataclass
class Spare:
    proc: subprocess.Popen
    out: Path
    ready_fd: int | None
    started: float
    ready: bool = False

    def check_ready(self) -> bool:
        """Non-blocking: whether the spare has written its ready byte (the pipe closes at exit too)."""
        if not self.ready and self.ready_fd is not None:
            try:
                data = os.read(self.ready_fd, 1)
            except BlockingIOError:
                return False
            self.ready = data == b"r"
            os.close(self.ready_fd)
            self.ready_fd = None
        return self.ready

    def close_fds(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


@dataclass
class SparePool:
    count: int
    log_dir: Path
    env: Callable[[], dict[str, str]]
    _spares: list[Spare] = field(default_factory=list)
    _serial: int = 0
    _failures: int = 0
    _not_before: float = 0.0

    @staticmethod
    def command(ready_fd: int) -> list[str]:
        return [sys.executable, "-m", "loopml.jobs.warm", "--ready-fd", str(ready_fd)]

    @property
    def spares(self) -> list[Spare]:
        return list(self._spares)

    def remove_stale_files(self) -> None:
        """Output files of spares that ended without a shutdown (their control plane died), and
        pid files of warm workers that ended while no control plane watched."""
        for path in self.log_dir.glob("spare-*.out"):
            pid = path.stem.removeprefix("spare-")
            if pid.isdigit() and not _is_spare(int(pid)):
                path.unlink(missing_ok=True)
        for path in self.log_dir.glob("*.pid"):
            try:
                pid, started = path.read_text().split()
                alive = process_start_time(int(pid)) == started
            except (OSError, ValueError):
                alive = False
            if not alive:
                path.unlink(missing_ok=True)

    def _spawn(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        out = self.log_dir / f"spare-starting-{os.getpid()}-{self._serial}.out"
        read_fd, write_fd = os.pipe()
        try:
            with open(out, "ab") as stream:
                proc = subprocess.Popen(self.command(write_fd), stdin=subprocess.PIPE, stdout=stream,
                                        stderr=subprocess.STDOUT, env=self.env(), pass_fds=(write_fd,),
                                        start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        named = self.log_dir / f"spare-{proc.pid}.out"  # by pid: a later control plane can tell stale files
        os.replace(out, named)
        self._spares.append(Spare(proc, named, read_fd, time.monotonic()))

    def refill(self) -> None:
        """Drop dead spares and start new ones up to ``count`` (with a back-off after failures)."""
        for spare in list(self._spares):
            spare.check_ready()
            if spare.proc.poll() is None:
                continue
            self._spares.remove(spare)
            spare.close_fds()
            tail = _tail(spare.out)
            spare.out.unlink(missing_ok=True)
            self._failures = 0 if spare.ready else self._failures + 1
            delay = min(MAX_BACKOFF_S, 2.0 ** self._failures) if self._failures else 0.0
            self._not_before = time.monotonic() + delay
            log.warning("spare worker %s exited with %s%s; replacing it%s", spare.proc.pid, spare.proc.returncode,
                        f" before it was ready: {tail}" if not spare.ready else "",
                        f" in {delay:g} s" if delay else "")
        if time.monotonic() < self._not_before:
            return
        while len(self._spares) < self.count:
            try:
                self._spawn()
            except OSError as exc:
                log.warning("could not start a spare worker: %s", exc)
                self._not_before = time.monotonic() + MAX_BACKOFF_S
                return

    def take(self, job_id: str, env: dict[str, str], job_out: Path) -> subprocess.Popen | None:
        """Hand ``job_id`` to a live spare (a ready one first) and return its process; None when
        no spare can take it (the caller starts the worker cold). The pool is refilled after."""
        try:
            for spare in sorted(self._spares, key=lambda s: not s.check_ready()):
                if spare.proc.poll() is not None:
                    continue
                self._spares.remove(spare)
                if self._hand_over(spare, job_id, env, job_out):
                    self._not_before = max(self._not_before, time.monotonic() + REFILL_AFTER_HANDOVER_S)
                    return spare.proc
            return None
        finally:
            self.refill()

    def _hand_over(self, spare: Spare, job_id: str, env: dict[str, str], job_out: Path) -> bool:
        started = process_start_time(spare.proc.pid)
        target = pid_file(self.log_dir, job_id)
        tmp = target.with_suffix(".pid.tmp")
        tmp.write_text(f"{spare.proc.pid} {started}\n" if started else f"{spare.proc.pid} -\n")
        os.replace(tmp, target)
        os.replace(spare.out, job_out)  # the spare's open descriptor now writes the job's file
        try:
            assert spare.proc.stdin is not None
            spare.proc.stdin.write(json.dumps({"job_id": job_id, "env": env}).encode() + b"\n")
            spare.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # died between the check and the write
            spare.close_fds()
            _kill_group(spare.proc, signal.SIGKILL)
            spare.proc.wait()
            target.unlink(missing_ok=True)
            job_out.unlink(missing_ok=True)
            return False
        spare.close_fds()
        return True

    def shutdown(self, grace_s: float = 3.0) -> None:
        """End idle spares (EOF on stdin, then signals) and reap them; remove their output files."""
        spares, self._spares = self._spares, []
        for spare in spares:
            spare.close_fds()
            _kill_group(spare.proc, signal.SIGTERM)  # also ends one still importing
        deadline = time.monotonic() + grace_s
        for spare in spares:
            try:
                spare.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(spare.proc, signal.SIGKILL)
                spare.proc.wait()
            spare.out.unlink(missing_ok=True)


def _is_spare(pid: int) -> bool:
    try:
        return b"loopml.jobs.warm" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, limit: int = 500) -> str:
    return read_tail(path, limit).strip()
