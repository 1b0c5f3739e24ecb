"""Leftovers of writes that never finished: a control plane killed (``kill -9``, power loss)
during an upload leaves ``<home>/tmp/upload-*`` (and ``import-*``) folders and ``*.tmp-*``
files beside artifact-store keys; nothing would ever remove them. The control plane removes
them at start-up — only those untouched for ``STALE_AFTER_S``: a live upload of another process
on the same home (a CLI writing locally) keeps writing, so its newest file is recent.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("loopml.artifacts")
STALE_AFTER_S = 3600.0
TEMP_FOLDER_PREFIXES = ("upload-", "import-")


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                continue
    return newest


def _stale_upload_folders(tmp_root: Path, cutoff: float) -> list[Path]:
    if not tmp_root.is_dir():
        return []
    return [p for p in sorted(tmp_root.iterdir())
            if p.name.startswith(TEMP_FOLDER_PREFIXES) and p.is_dir() and not p.is_symlink()
            and _newest_mtime(p) < cutoff]


def _stale_temp_files(root: Path, cutoff: float) -> list[Path]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if ".tmp-" in name:
                path = Path(dirpath) / name
                try:
                    if path.lstat().st_mtime < cutoff:
                        found.append(path)
                except OSError:
                    continue
    return found


def remove_stale_temporaries(home: str | os.PathLike, artifact_root: str | os.PathLike | None, *,
                             older_than_s: float = STALE_AFTER_S, now: float | None = None) -> list[str]:
    """Remove upload folders under ``<home>/tmp`` and ``*.tmp-*`` files under the local artifact
    store ``artifact_root`` (None: an S3 store, whose unfinished writes never appear) untouched
    for ``older_than_s``. Returns what was removed."""
    cutoff = (time.time() if now is None else now) - older_than_s
    removed: list[str] = []
    for folder in _stale_upload_folders(Path(home) / "tmp", cutoff):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(str(folder))
    if artifact_root is not None and Path(artifact_root).is_dir():
        for path in _stale_temp_files(Path(artifact_root), cutoff):
            try:
                path.unlink()
                removed.append(str(path))
            except OSError:
                continue
    if removed:
        log.warning("removed %d temporary file(s)/folder(s) left by interrupted uploads (e.g. %s)",
                    len(removed), removed[0])
    return removed


def remove_platform_temporaries(platform) -> list[str]:  # platform: loopml.platform.Platform
    """``remove_stale_temporaries`` for a Platform's home and (local) artifact store."""
    store = platform.artifacts
    return remove_stale_temporaries(platform.settings.home, store.local_root if store.is_local else None)
