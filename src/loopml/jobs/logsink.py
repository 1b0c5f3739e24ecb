"""Capture everything a worker prints (Python, TensorFlow's C++ logs, tracebacks) into the job's logs.

File descriptors 1 and 2 are redirected into a pipe; a thread ships the lines to the metadata
store in batches (once a second), so `jobs logs -f` works wherever the worker runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable


class LogSink:
    def __init__(self, write: Callable[[list[str]], None], interval_s: float = 1.0, echo_fd: int | None = None) -> None:
        self._write = write
        self._interval = interval_s
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._echo_fd = echo_fd
        self._reader: threading.Thread | None = None
        self._marker: bytes | None = None
        self._marker_seen = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> "LogSink":
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        self._reader = threading.Thread(target=self._read, args=(read_fd,), daemon=True, name="log-reader")
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="log-flusher")
        self._reader.start()
        self._flusher.start()
        return self

    def _read(self, fd: int) -> None:
        buf = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if self._echo_fd is not None:
                os.write(self._echo_fd, chunk)
            buf += chunk
            if self._marker is not None and self._marker in buf:
                buf = buf.replace(self._marker + b"\n", b"").replace(self._marker, b"")
                self._marker_seen.set()
            *lines, buf = buf.split(b"\n")
            # Keras progress bars redraw with '\r': keep only the final state of each line.
            decoded = [ln.decode("utf-8", "replace").rsplit("\r", 1)[-1].rstrip() for ln in lines]
            with self._lock:
                self._lines.extend(d for d in decoded if d)
        if buf.strip():
            with self._lock:
                self._lines.append(buf.decode("utf-8", "replace").rstrip())

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            try:
                self._write(lines)
            except Exception:  # noqa: BLE001 - logs must never kill the job; keep them for the next try
                with self._lock:
                    self._lines[:0] = lines

    def sync(self, timeout: float = 5.0) -> None:
        """Return once everything written so far is stored: a marker goes through the pipe last."""
        sys.stdout.flush()
        sys.stderr.flush()
        self._marker_seen.clear()
        self._marker = f"\x00loopml-sync-{time.monotonic_ns()}\x00".encode()
        os.write(1, self._marker + b"\n")
        self._marker_seen.wait(timeout)
        self.flush()

    def close(self) -> None:
        self.sync()
        self._stop.set()
