"""The end of a worker's output file: what an executor reports when the worker exits.

Every executor (local processes, spare workers, Ray job and replica actors) keeps a worker's
stdout/stderr in a file on the worker's machine; when the worker ends, the last bytes of that file
explain how (a traceback's last lines, "Killed", the serving process's last words).
"""

from __future__ import annotations

import os


def read_tail(path: str | os.PathLike[str], limit: int) -> str:
    """The last ``limit`` bytes of the file at ``path``, decoded (undecodable bytes replaced);
    "" when it cannot be read (never written, removed). Only the tail is read, however big the file."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
