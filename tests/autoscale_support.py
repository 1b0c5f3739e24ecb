"""A real actuator for the autoscaling test without Ray: serving processes on ports behind HAProxy.

``LocalReplicas`` is a ``Scaler`` (controlplane/autoscaler.py):

* scale-out: start a data-plane node (``python -m loopml.serving.server --node``, what ``loopml
  serve`` runs: it heartbeats its load into ``serving_nodes``) on the next slot's port; HAProxy's health
  check (``GET /readyz``) admits it once its endpoints are loaded;
* scale-in, drain first: the replica is set to ``drain`` through HAProxy's runtime API (no new
  request goes to it), waits until HAProxy counts no request on it, then gets SIGTERM (which
  finishes anything in flight) and is stopped; while that runs it is reported ``draining``;
* ``draining()``: how many replicas are being drained (at the LB: their nodes still say ready).

A background thread converges on the wanted count, so ``scale_to`` never blocks the control loop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loopml.core.settings import Settings
from tests.process_support import free_port

HAPROXY = "/usr/sbin/haproxy"


def _config(front: int, ports: list[int], sock: Path) -> str:
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 1 disabled" for i, p in enumerate(ports))
    return f"""global
    stats socket {sock} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0

frontend fe
    bind 127.0.0.1:{front}
    default_backend be

backend be
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""


class LocalReplicas:
    def __init__(self, settings: Settings, endpoint: str, workdir: Path, *, slots: int = 3) -> None:
        self.settings, self.endpoint, self.workdir = settings, endpoint, workdir
        self.ports = [free_port() for _ in range(slots)]
        self.front = free_port()
        self.sock = workdir / "haproxy.sock"
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(_config(self.front, self.ports, self.sock))
        self.haproxy = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=open(workdir / "haproxy.log", "wb"),
                                        stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.front}"
        self.procs: dict[int, subprocess.Popen] = {}  # slot → serving process (live or draining)
        self.draining: set[int] = set()
        self.stopped: list[int] = []  # slots drained and stopped, in order
        self.drain_seen_busy: list[int] = []  # requests HAProxy still counted on a slot when it was drained
        self.wanted = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        deadline = time.monotonic() + 20
        while not self.sock.exists():
            assert self.haproxy.poll() is None and time.monotonic() < deadline, (workdir / "haproxy.log").read_text()
            time.sleep(0.05)
        self._thread = threading.Thread(target=self._run, name="local-replicas", daemon=True)
        self._thread.start()

    # -- Scaler ----------------------------------------------------------------------------------
    def scale_to(self, endpoint: str, replicas: int) -> None:
        assert endpoint == self.endpoint
        with self._lock:
            self.wanted = min(replicas, len(self.ports))
        self._wake.set()

    def draining_count(self) -> int:
        with self._lock:
            return len(self.draining)

    # -- HAProxy runtime API -----------------------------------------------------------------------
    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.sock))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r.get("pxname") == "be"}

    def _admitted(self, slot: int) -> bool:
        return self.stats().get(f"s{slot}", {}).get("status", "").startswith("UP")

    def served(self) -> dict[int, int]:
        """Requests HAProxy sent to each slot so far."""
        return {int(name[1:]): int(row["stot"] or 0) for name, row in self.stats().items() if name.startswith("s")}

    # -- convergence -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._converge()
            except Exception as exc:  # noqa: BLE001 - recorded; the test asserts there are none
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def live(self) -> list[int]:
        with self._lock:
            return sorted(s for s in self.procs if s not in self.draining)

    def _converge(self) -> None:
        live = self.live()
        if len(live) < self.wanted:
            slot = next(s for s in range(len(self.ports)) if s not in self.procs)
            self._start(slot)
        elif len(live) > self.wanted and not self.draining:
            self._drain(live[-1])

    def _start(self, slot: int) -> None:
        env = self.settings.child_env("serving")
        log = open(self.workdir / f"replica-{slot}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "loopml.serving.server", "--node", "--host", "127.0.0.1",
                                 "--port", str(self.ports[slot]), "--parent-pid", str(os.getpid())],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        with self._lock:
            self.procs[slot] = proc
        deadline = time.monotonic() + 240  # a loaded machine: TensorFlow's import, the model's load
        while True:  # its endpoints are loaded: let HAProxy check it in
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports[slot]}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica {slot} did not become ready (exit {proc.poll()})")
            time.sleep(0.1)
        self.admin(f"set server be/s{slot} state ready")

    def _drain(self, slot: int) -> None:
        with self._lock:
            self.draining.add(slot)
        self.admin(f"set server be/s{slot} state drain")  # the LB sends it nothing new
        deadline = time.monotonic() + 60
        busy = int(self.stats()[f"s{slot}"]["scur"] or 0)
        self.drain_seen_busy.append(busy)
        while int(self.stats()[f"s{slot}"]["scur"] or 0) > 0:  # in flight on it
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {slot} did not drain")
            time.sleep(0.05)
        self.admin(f"set server be/s{slot} state maint")
        proc = self.procs[slot]
        proc.send_signal(signal.SIGTERM)  # finishes whatever is still in flight
        proc.wait(timeout=60)
        with self._lock:
            self.procs.pop(slot)
            self.draining.discard(slot)
            self.stopped.append(slot)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.haproxy.terminate()
        self.haproxy.wait(timeout=10)

    def __enter__(self) -> LocalReplicas:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
