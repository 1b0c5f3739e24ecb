"""Keeps endpoints at their desired state: re-resolves aliases, supervises the serving process.

The control plane owns the data plane's listening socket (default 127.0.0.1:8081) and hands
it to the serving process (``python -m loopml.serving.server --fd N``), started with the control
plane whether or not endpoints exist (an empty one is cheap: models load lazily). While it
restarts after a crash, the socket stays open: clients are queued by the kernel (never
"connection refused") and the new process answers them — 503 with ``Retry-After`` for
endpoints still loading, never a hang. The serving process itself polls the metadata store for
endpoint generations and reports what it serves; this side only moves generations (alias
moves) and keeps the process alive, each endpoint in its own exception boundary.
"""

from __future__ import annotations

import logging
import os
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
from loopml.serving.spec import model_ref_text, resolve_spec
from loopml.store.endpoints_repo import model_refs

log = logging.getLogger("loopml.controlplane.endpoints")

_MAX_BACKOFF_S = 30.0
_STABLE_AFTER_S = 60.0  # a process up this long resets the crash back-off


class EndpointSupervisor:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self._sock: socket.socket | None = None
        self._bind_error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._started_at = 0.0
        self._crashes = 0
        self._next_start = 0.0
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
        if self._proc is not None:
            code = self._proc.poll()
            if code is None:
                if now - self._started_at > _STABLE_AFTER_S:
                    self._crashes = 0
                return
            self._proc = None
            self._crashes += 1
            delay = min(0.5 * 2 ** (self._crashes - 1), _MAX_BACKOFF_S)
            self._next_start = now + delay
            log.error("serving process exited with code %s; restarting in %.1f s (log: %s)",
                      code, delay, self._log_path)
            self.platform.endpoints.reset_served(
                f"serving process exited (code {code}); restarting")
        if now < self._next_start:
            return
        self._start()

    def _start(self) -> None:
        with self._lock:
            if not self._stopped and self._sock is not None:
                self._spawn()

    def _spawn(self) -> None:
        assert self._sock is not None
        self.platform.endpoints.reset_served("serving process starting")
        fd = self._sock.fileno()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self._log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "loopml.serving.server", "--fd", str(fd),
                 "--parent-pid", str(os.getpid())],
                pass_fds=(fd,), env=self.settings.child_env("serving"), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            out.close()
        self._started_at = time.monotonic()
        log.info("serving process %s started on %s", self._proc.pid, self.url)

    # -- shutdown -------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        # longer than the serving process's graceful shutdown (10 s) + capture flush
        with self._lock:
            self._stopped = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # uvicorn drains in-flight requests, capture flushes
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None
