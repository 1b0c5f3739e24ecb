"""A real actuator for the autoscaling test without Ray: serving processes on ports behind HAProxy.

``LocalReplicas`` is a ``Scaler`` (controlplane/autoscaler.py):

* scale-out: start a data-plane node (``python -m loopml.serving.server --node``, what ``loopml
  serve`` runs: it heartbeats its load into ``serving_nodes``) on the next slot's port; HAProxy's health
  check (``GET /readyz``) admits it once its endpoints are loaded;
* scale-in, drained the product's way (the Ray placer's: SIGTERM to the serving process): the node
  fails ``/readyz`` with 503 "draining" while it keeps serving, HAProxy's health check takes it out,
  then a second SIGTERM ends the drain wait (the product's timer, ``LOOPML_SERVING_DRAIN_S``, made a
  condition here: the settings give it 60 s) and the node stops accepting, answers what it holds
  and exits; while that runs it is reported ``draining``;
* proof that a scale-in fails no request: before the SIGTERM, ``hold`` requests are sent through
  HAProxy pinned to the slot being removed (header ``x-loopml-slot``) with half their body, so
  they are in flight on that node (HAProxy counts them on it). Half of them get the rest of their
  body once the LB has taken the node out (answered while it drains), the other half once the node
  refuses new connections (answered by its graceful shutdown). Every status is kept in ``held``;
* ``draining()``: how many replicas are being drained.

A background thread converges on the wanted count, so ``scale_to`` never blocks the control loop.
Every wait is on a condition (HAProxy's stats, the node's port, the process), with generous limits.
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


SLOT_HEADER = "x-loopml-slot"


def _config(front: int, ports: list[int], sock: Path) -> str:
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 1 disabled" for i, p in enumerate(ports))
    pinned = "\n".join(f"    use-server s{i} if {{ req.hdr({SLOT_HEADER}) -m str {i} }}" for i in range(len(ports)))
    return f"""global
    stats socket {sock} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 0

frontend fe
    bind 127.0.0.1:{front}
    default_backend be

backend be
    balance roundrobin
    option httpchk GET /readyz
{servers}
{pinned}
"""


class LocalReplicas:
    def __init__(self, settings: Settings, endpoint: str, workdir: Path, *, slots: int = 3,
                 body: bytes = b"", hold: int = 0) -> None:
        self.settings, self.endpoint, self.workdir = settings, endpoint, workdir
        self.body, self.hold = body, hold  # ``hold`` requests (of ``body``) in flight on a replica drained
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
        self.drain_seen_busy: list[int] = []  # requests HAProxy counted on a slot when its drain began
        self.held: dict[int, list[int]] = {}  # slot → status of each request held in flight through its drain
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

    def _wait(self, predicate, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting: {what}")
            time.sleep(0.05)

    def _in_flight(self, slot: int) -> int:
        return int(self.stats()[f"s{slot}"]["scur"] or 0)

    def _refuses(self, slot: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.ports[slot]), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    def _send_half(self, slot: int) -> socket.socket:
        """A request through the LB pinned to ``slot``, its body only half sent: in flight there."""
        conn = socket.create_connection(("127.0.0.1", self.front), timeout=60)
        head = (f"POST /endpoints/{self.endpoint}/invocations HTTP/1.1\r\nHost: lb\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
                f"{SLOT_HEADER}: {slot}\r\nConnection: close\r\n\r\n").encode()
        conn.sendall(head + self.body[: len(self.body) // 2])
        return conn

    def _finish(self, conn: socket.socket) -> int:
        """Send the rest of the body; the answer's status code (-1: the connection broke)."""
        chunks = []
        try:
            with conn:
                conn.sendall(self.body[len(self.body) // 2:])
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return -1
        reply = b"".join(chunks)
        return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else -1

    def _drain(self, slot: int) -> None:
        with self._lock:
            self.draining.add(slot)
        held = [self._send_half(slot) for _ in range(self.hold)]
        self._wait(lambda: self._in_flight(slot) >= self.hold, f"{self.hold} requests in flight on replica {slot}")
        self.drain_seen_busy.append(self._in_flight(slot))
        proc = self.procs[slot]
        proc.send_signal(signal.SIGTERM)  # the node drains: /readyz 503 "draining", still serving
        self._wait(lambda: self.stats()[f"s{slot}"]["status"].startswith("DOWN"),
                   f"HAProxy takes replica {slot} out on its /readyz")
        codes = [self._finish(conn) for conn in held[: len(held) // 2]]  # answered while it drains
        self.admin(f"set server be/s{slot} state maint")
        proc.send_signal(signal.SIGTERM)  # the drain wait ends: stop accepting, answer what it holds
        self._wait(lambda: self._refuses(slot) or proc.poll() is not None, f"replica {slot} stops accepting")
        codes += [self._finish(conn) for conn in held[len(held) // 2:]]  # answered by its shutdown
        proc.wait(timeout=60)
        with self._lock:
            self.held[slot] = codes
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
