"""Small helpers the bench scripts share (not a benchmark).

The scripts run as ``python bench/NAME.py``: Python puts bench/ first on ``sys.path``, so each
imports these as ``from _common import …``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def log(msg: str = "") -> None:
    """A progress or result line on stdout, at once."""
    print(msg, flush=True)


def log_stderr(msg: str) -> None:
    """A progress line on stderr, at once (scripts whose stdout is the result only)."""
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nobody on 127.0.0.1 listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_bytes(field: str) -> int:
    """A /proc/self/status figure (``VmRSS``, ``VmHWM``, …) in bytes. VmHWM (peak RSS) belongs to
    this process image: unlike getrusage's ru_maxrss it does not carry over the parent's peak
    across fork + exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def stop_group(proc: subprocess.Popen, term_wait_s: float, kill_wait_s: float) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL it if it has not ended ``term_wait_s`` later."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(term_wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(kill_wait_s)
        except ProcessLookupError:
            pass


def workdir(given: Path | None, prefix: str) -> tuple[tempfile.TemporaryDirectory | None, Path]:
    """(the temporary folder to clean up or None, the folder to work in): ``given`` (made if
    missing, kept afterwards), else a new temporary folder named ``prefix…``."""
    if given is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        return tmp, Path(tmp.name)
    folder = given.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return None, folder


@contextmanager
def loopml_server(home: Path, *, ready_s: float, **env_extra: str) -> Iterator[str]:
    """The venv's ``loopml server`` on a free port with ``home`` (which must exist), in a process
    group of its own, its output in ``home/server.log``; yields its URL once /health answers
    (RuntimeError with the log's tail if it exits or ``ready_s`` passes first). At the end: SIGTERM
    to the group, SIGKILL if it is still there 30 s later."""
    port = free_port()
    env = {**os.environ, "LOOPML_HOME": str(home), "LOOPML_PORT": str(port), "LOOPML_SERVING_PORT": "0",
           "LOOPML_API_URL": f"http://127.0.0.1:{port}", **env_extra}
    env.pop("LOOPML_TOKEN", None)
    out = open(home / "server.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("loopml")), "server", "--port", str(port)],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "server.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        out.close()
