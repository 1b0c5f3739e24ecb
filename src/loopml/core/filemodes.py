"""Files only their owner reads: LoopML's home (0700), its SQLite database, the artifact store's
files (captured traffic, datasets, models: 0600) and folders (0700).

The default umask makes them 0755/0644, so any local user could read the metadata database
(webhook secrets' hashes, tokens' hashes, every record) and captured requests. Modes are set
where each is created, not through the process umask (which would change every file the
process or its children write).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` (and missing parents) created 0700; an existing folder of ours loses group/other
    access (homes created before this, 0755)."""
    folder = Path(path)
    make_dirs(folder)
    with contextlib.suppress(OSError):  # not ours (a shared mount): leave it as its owner set it
        st = folder.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            folder.chmod(DIR_MODE)
    return folder


def make_dirs(path: str | os.PathLike) -> None:
    """``os.makedirs(path, exist_ok=True)`` with 0700 for every folder it creates (makedirs
    gives its mode to the last one only)."""
    if os.path.isdir(path):
        return
    missing = []
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another writer
            if not folder.is_dir():
                raise


def private_file(path: str | os.PathLike) -> None:
    """Make an existing file 0600 (missing: nothing to do)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, FILE_MODE)


def create_private(path: str | os.PathLike) -> int:
    """A new file opened for writing, 0600 from its creation (never readable by others, even
    briefly); returns the descriptor (``open(fd, "wb")`` it)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


def private_sqlite_file(database_url: str) -> None:
    """A SQLite database (and its -wal/-shm/-journal files) 0600: created empty with that mode
    when missing (SQLite then gives its side files the same mode), tightened when it exists.
    Other databases: nothing to do here."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix) or database_url[len(prefix):] in ("", ":memory:"):
        return
    path = Path(database_url[len(prefix):].split("?", 1)[0])
    make_dirs(path.parent)
    try:
        os.close(create_private(path))
    except FileExistsError:
        pass
    for side in ("", "-wal", "-shm", "-journal"):
        private_file(f"{path}{side}")
