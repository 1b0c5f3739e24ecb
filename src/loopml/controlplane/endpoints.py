"""Keeps endpoints at their desired state: re-resolves aliases, supervises the serving workers.

The control plane owns the data plane's listening socket (default 127.0.0.1:8081) and hands
it to ``LOOPML_SERVING_WORKERS`` serving processes (``python -m loopml.serving.server --fd N``),
all accepting on that one socket (the kernel gives each connection to one of them), started
with the control plane whether or not endpoints exist (an empty one is cheap: models load
lazily). Each worker serves every endpoint and is restarted on its own, with its own back-off;
while one restarts the others keep answering (the replacement accepts only once it has loaded
every endpoint, so callers never meet it loading), and the socket stays open even when all are down:
clients are queued by the kernel (never "connection refused") and the new process answers them
— 503 with ``Retry-After`` for endpoints still loading, never a hang. The workers poll the
metadata store for endpoint generations and each reports what it serves (the same generation:
idempotent); this side only moves generations (alias moves) and keeps the workers alive, each
endpoint in its own exception boundary.

Reported state with several workers: an endpoint is reset to "not served" only when no worker
is alive (at start, or when the last one died) — one worker's restart does not make it flap,
since the others still serve it. Metrics: the workers share prometheus_client multiprocess files
in ``{home}/metrics`` (emptied when this supervisor first starts workers); a reaped worker is
``mark_process_dead`` (its gauges leave the sums, its counters stay in the totals).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from loopml.platform import Platform
from loopml.registry.resolve import lookup
from loopml.serving.metrics import mark_process_dead
from loopml.serving.spec import model_ref_text, resolve_spec
from loopml.store.endpoints_repo import model_refs

log = logging.getLogger("loopml.controlplane.endpoints")

_MAX_BACKOFF_S = 30.0
_STABLE_AFTER_S = 60.0  # a process up this long resets the crash back-off
_MAX_AUTO_WORKERS = 4
_ACCEPT_WHEN_READY_S = 120.0  # a replacement's load before it accepts anyway


def serving_workers(configured: int | None, cores: int | None = None) -> int:
    """How many serving processes: the setting, or (0/None) cores // 2 within [1, 4] — each
    worker's batchers run ONNX Runtime threads, and the control plane (and on a small machine
    the clients) need cores too; past 4, one machine's port is rarely the limit."""
    if configured:
        return int(configured)
    cores = cores if cores is not None else (len(os.sched_getaffinity(0))
                                             if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(1, min((cores or 1) // 2, _MAX_AUTO_WORKERS))


class _Worker:
    """One serving-process slot: restarted on its own, with its own crash back-off."""

    __slots__ = ("index", "proc", "started_at", "crashes", "next_start")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.crashes = 0
        self.next_start = 0.0


class EndpointSupervisor:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self._sock: socket.socket | None = None
        self._bind_error: str | None = None
        self.workers = serving_workers(self.settings.serving_workers)
        self._slots = [_Worker(i) for i in range(self.workers)]
        self._metrics_dir = Path(self.settings.home) / "metrics"
        self._metrics_cleaned = False
        self._log_path = Path(self.settings.home) / "logs" / "serving.log"
        self._lock = threading.Lock()  # a tick still running must not start a process after stop()
        self._stopped = False

    # -- the data plane's address ------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int] | None:
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def log_path(self) -> Path:
        """The serving process's output (its log)."""
        return self._log_path

    @property
    def url(self) -> str | None:
        addr = self.address
        if addr is None:
            return None
        host = "127.0.0.1" if addr[0] in ("0.0.0.0", "::") else addr[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{addr[1]}"

    def bind(self) -> None:
        if self._sock is not None or self._stopped:
            return
        host, port = self.settings.serving_host, self.settings.serving_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            if self._bind_error is None:
                log.error("data plane: cannot listen on %s:%s: %s", host, port, exc)
            self._bind_error = f"the data plane cannot listen on {host}:{port}: {exc.strerror or exc}"
            return
        self._sock, self._bind_error = sock, None

    # -- one reconcile pass --------------------------------------------------------------------
    def tick(self) -> None:
        repo = self.platform.endpoints
        records = repo.list()
        for rec in records:
            try:
                self._follow_aliases(rec)
            except Exception:  # noqa: BLE001 - one endpoint never stops the others
                log.exception("reconciling endpoint %s failed", rec["name"])
        # the serving process runs from the start, endpoints or not: the port it holds answers
        # at once (/ping, 404 for an unknown endpoint), never a silent queue (issue 10)
        self.bind()
        if self._sock is None:
            for rec in records:
                if rec["status"] != "Failed" or rec["message"] != self._bind_error:
                    repo.report(rec["name"], rec["generation"], ok=False, served=None,
                                message=self._bind_error)
            return
        self._supervise()

    def _follow_aliases(self, rec: dict[str, Any]) -> None:
        spec, current = rec["spec"], rec["resolved"]
        if not any(v.get("alias") for v in model_refs(spec)):
            return
        try:
            fresh = resolve_spec(spec, partial(lookup, self.platform))
        except Exception as exc:  # noqa: BLE001 - e.g. the alias was deleted: keep serving
            log.debug("endpoint %s: cannot re-resolve (%s); keeping versions", rec["name"], exc)
            return
        before = {v["name"]: v["version"] for v in model_refs(current)}
        after = {v["name"]: v["version"] for v in model_refs(fresh)}
        if before == after:
            return
        moved = [f"{model_ref_text(v)} → version {after[v['name']]}" for v in model_refs(spec)
                 if before.get(v["name"]) != after.get(v["name"])]
        if self.platform.endpoints.re_resolve(rec["name"], rec["generation"], fresh,
                                              "alias moved: " + ", ".join(moved)):
            log.warning("endpoint %s follows its alias: %s", rec["name"], ", ".join(moved))

    def _supervise(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                if now - slot.started_at > _STABLE_AFTER_S:
                    slot.crashes = 0
                continue
            pid, slot.proc = slot.proc.pid, None
            mark_process_dead(pid, self._metrics_dir)
            slot.crashes += 1
            delay = min(0.5 * 2 ** (slot.crashes - 1), _MAX_BACKOFF_S)
            slot.next_start = now + delay
            log.error("serving process %s (worker %d) exited with code %s; restarting in %.1f s "
                      "(log: %s)", pid, slot.index, code, delay, self._log_path)
            if not self._alive():  # the others still serve: no flapping status
                self.platform.endpoints.reset_served(
                    f"serving process exited (code {code}); restarting")
        for slot in self._slots:
            if slot.proc is None and now >= slot.next_start:
                self._start(slot)

    def _alive(self) -> list[_Worker]:
        return [s for s in self._slots if s.proc is not None]

    def _start(self, slot: _Worker) -> None:
        with self._lock:
            if not self._stopped and self._sock is not None and slot.proc is None:
                self._spawn(slot)

    def _spawn(self, slot: _Worker) -> None:
        assert self._sock is not None
        others = bool(self._alive())
        if not others:
            self.platform.endpoints.reset_served("serving process starting")
        if not self._metrics_cleaned:  # the last run's workers' numbers are not this run's
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._metrics_cleaned = True
        fd = self._sock.fileno()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self._log_path, "ab")
        # beside live workers, a new one loads every endpoint before it accepts: callers never
        # meet it loading (503) while the others could answer; alone, it accepts at once
        ready_first = ["--accept-when-ready", str(_ACCEPT_WHEN_READY_S)] if others else []
        try:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "loopml.serving.server", "--fd", str(fd),
                 "--parent-pid", str(os.getpid()), "--metrics-dir", str(self._metrics_dir),
                 *ready_first],
                pass_fds=(fd,), env=self.settings.child_env("serving"), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            out.close()
        slot.started_at = time.monotonic()
        log.info("serving process %s (worker %d of %d) started on %s", slot.proc.pid, slot.index,
                 self.workers, self.url)

    # -- shutdown -------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        # longer than the serving process's graceful shutdown (10 s) + capture flush
        with self._lock:
            self._stopped = True
            procs = [s.proc for s in self._slots if s.proc is not None]
            for slot in self._slots:
                slot.proc = None
        running = [p for p in procs if p.poll() is None]
        for proc in running:
            proc.terminate()  # uvicorn drains in-flight requests, capture flushes
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for proc in procs:
            mark_process_dead(proc.pid, self._metrics_dir)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def pid(self) -> int | None:
        """The first live worker's pid (see ``pids`` for all)."""
        pids = self.pids
        return pids[0] if pids else None

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]
