"""Helpers for tests that run real servers and wait on real work: free ports, a clean child
environment, a `loopml server` subprocess, and polling with a deadline (never a timing assertion)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

JOB_TERMINAL = ("succeeded", "failed", "cancelled")


_HANDED_OUT: set[int] = set()  # this test process's ports: never given twice
_RANDOM = random.Random()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nobody listens on right now (for processes that cannot be given port 0).

    Picked below the kernel's ephemeral range (above Ray's worker ports, 10002-19999) where it
    can: a port from bind(0) is in that range, and any outgoing connection on the machine may take
    it as its source port in the seconds before the server this port is for binds it ("address
    in use"). Never the same port twice in one test process."""
    top = min(_ephemeral_start(), 32768)
    if top > 21000:
        for _ in range(200):
            port = _RANDOM.randrange(20000, top)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    while True:  # no room below the ephemeral range: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


WARM_WORKERS_VAR = "LOOPML_WARM_WORKERS"  # the suite's choice (tests/conftest.py), kept like LOOPML_TEST_*


def _suite_var(name: str) -> bool:
    return name.startswith("LOOPML_TEST_") or name == WARM_WORKERS_VAR


def without_loopml_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: os.environ) without the caller's LOOPML_* settings; the test
    suite's own LOOPML_TEST_* knobs (and its LOOPML_WARM_WORKERS) stay."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("LOOPML_") or _suite_var(k)}


def drop_loopml_vars(monkeypatch: Any) -> None:
    """Unset the caller's LOOPML_* settings for this test (the suite's LOOPML_TEST_* stay)."""
    for var in list(os.environ):
        if var.startswith("LOOPML_") and not _suite_var(var):
            monkeypatch.delenv(var)


def server_env(home: Path, port: int, serving_port: int = 0, **extra: str) -> dict[str, str]:
    """The environment of a `loopml server` child: its own home, its ports, no config file,
    nothing inherited from the caller's LOOPML_* settings; ``extra`` on top."""
    env = without_loopml_vars()
    env.update(LOOPML_HOME=str(home), LOOPML_PORT=str(port), LOOPML_SERVING_PORT=str(serving_port),
               LOOPML_CONFIG=str(home / "no-such-loopml.toml"), **extra)
    return env


def start_server(home: Path, port: int, log: Path, **extra: str) -> subprocess.Popen:
    """`python -m loopml.cli.main server` on ``port`` (data plane on a free port), its output
    appended to ``log``; returned once /health answers."""
    from loopml.sdk.client import Client

    env = server_env(home, port, LOOPML_RECONCILE_INTERVAL_S="0.2", **extra)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client = Client(f"http://127.0.0.1:{port}", token="")
    deadline = time.monotonic() + 180  # generous: on a loaded 2-core machine a start took > 60 s
    while time.monotonic() < deadline:
        try:
            client.health()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                raise AssertionError(f"loopml server exited with {proc.returncode}: "
                                     f"{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"loopml server did not start: {log.read_text(errors='replace')[-2000:]}")


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, poll: float = 0.1,
             what: str = "condition") -> Any:
    """The first truthy value of ``predicate()``, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def wait_job(plat: Any, job_id: str, *, timeout: float = 240.0, until: tuple[str, ...] = JOB_TERMINAL,
             check: Callable[[dict], bool] | None = None) -> dict:
    """The job once its status is in ``until`` (and ``check`` holds); at the deadline, an error
    with its status and logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = plat.jobs.get(job_id)
        if job["status"] in until and (check is None or check(job)):
            return job
        time.sleep(0.2)
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job_id))
    raise AssertionError(f"job {job_id} still {plat.jobs.get(job_id)['status']} after {timeout:g}s\n{logs}")
