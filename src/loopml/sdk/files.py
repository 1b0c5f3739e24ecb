"""Sending local files: a folder zipped in memory, upload progress, and ``upload_file``."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

from loopml.core import FOLDER_ZIP_COMMENT
from loopml.core.errors import InvalidInput
from loopml.sdk.http import Connection


def _visible(name: str) -> bool:
    return not (name.startswith(".") or name in ("__MACOSX", "__pycache__"))


def _link_problem(path: Path, real_root: Path, shown: str) -> str | None:
    """Why the symbolic link ``path`` cannot be sent (None: it stays inside the folder)."""
    target = Path(os.path.realpath(path))
    if not target.exists():
        return f"{shown} is a symbolic link to {os.readlink(path)!r}, which does not exist"
    if target != real_root and real_root not in target.parents:
        return (f"{shown} is a symbolic link out of the folder (to {str(target)!r}); links are followed "
                "only inside it: copy the file in instead")
    return None


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The folder as an in-memory zip whose entries sit under the folder's own name. Symbolic
    links are followed only inside the folder: a dangling one or one pointing out of it is an
    InvalidInput (never a traceback, never a file from elsewhere)."""
    root = Path(folder)
    real_root = Path(os.path.realpath(root))
    top = root.resolve().name or "data"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.comment = FOLDER_ZIP_COMMENT
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                if path.is_symlink():
                    problem = _link_problem(path, real_root, repr(os.fspath(path)))
                    if problem:
                        raise InvalidInput(problem)
            for fname in sorted(f for f in filenames if _visible(f)):
                path = Path(dirpath) / fname
                try:
                    zf.write(path, f"{top}/{path.relative_to(root).as_posix()}")
                except OSError as exc:  # unreadable, or gone while zipping
                    raise InvalidInput(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return buf.getvalue()


class Counted:
    """A seekable binary file that reports (bytes read, size) as httpx streams it out."""

    def __init__(self, f: Any, callback: Callable[[int, int], None] | None) -> None:
        self._f, self._callback = f, callback
        self._size = f.seek(0, os.SEEK_END)
        f.seek(0)

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        if self._callback is not None:
            self._callback(self._f.tell(), self._size)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


class FilesAPI(Connection):
    def upload_file(self, path: str | os.PathLike, kind: str = "input") -> str:
        """Upload a model ``.py`` (``kind="model"``) or a prediction input (a folder is zipped).

        Returns:
            The artifact key (use as ``file:<key>`` / ``upload:<key>``).

        Example::

            key = c.upload_file("my_model.py", kind="model")
        """
        p = Path(path).expanduser()
        if not p.exists():
            raise InvalidInput(f"{kind} file {os.fspath(path)!r} does not exist")
        if p.is_dir():
            payload: Any = (f"{p.resolve().name or 'input'}.zip", zip_folder(p), "application/zip")
            return self._json("POST", "/files", data={"kind": kind}, files={"file": payload},
                              timeout=self._upload_timeout())["key"]
        with p.open("rb") as f:
            return self._json("POST", "/files", data={"kind": kind}, files={"file": (p.name, f)},
                              timeout=self._upload_timeout())["key"]
