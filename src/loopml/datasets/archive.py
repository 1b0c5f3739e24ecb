"""Uploaded zip archives: unpacked only when no member can escape, link out or explode."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from loopml.core.errors import InvalidInput

MAX_UNZIPPED_BYTES = 16 * 1024**3  # refuse zip bombs before writing anything
MAX_ZIP_MEMBERS = 1_000_000


def _member_problem(name: str) -> str | None:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    if "\x00" in name:
        return "contains a NUL character"
    return None


def safe_unzip(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest``, refusing the whole archive if any member could escape it."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InvalidInput(f"upload {archive.name!r} is not a valid zip archive") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise InvalidInput(f"zip {archive.name!r} has {len(members)} entries (limit {MAX_ZIP_MEMBERS})")
        total = 0
        for m in members:
            problem = _member_problem(m.filename)
            if problem:
                raise InvalidInput(f"zip {archive.name!r} refused: member {m.filename!r} {problem}")
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise InvalidInput(f"zip {archive.name!r} refused: member {m.filename!r} is a symbolic link")
            total += m.file_size
        if total > MAX_UNZIPPED_BYTES:
            raise InvalidInput(f"zip {archive.name!r} would unpack to {total} bytes (limit {MAX_UNZIPPED_BYTES})")
        root = dest.resolve()
        root.mkdir(parents=True, exist_ok=True)
        for m in members:
            target = (root / m.filename).resolve()
            if target != root and root not in target.parents:  # belt and braces after the checks above
                raise InvalidInput(f"zip {archive.name!r} refused: member {m.filename!r} escapes the archive")
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InvalidInput(f"zip {archive.name!r}: member {m.filename!r} cannot be read ({exc})") from None
    return root


def _visible(p: Path) -> bool:
    return not (p.name.startswith(".") or p.name == "__MACOSX")


def dataset_root(folder: Path) -> Path:
    """What a zip stands for: its single data file, its single wrapping folder, or itself."""
    def visible(d: Path) -> list[Path]:
        return [p for p in d.iterdir() if _visible(p)]

    entries = visible(folder)
    if not entries:
        raise InvalidInput("the uploaded zip is empty")
    if len(entries) == 1 and entries[0].is_file():
        return entries[0]
    if len(entries) == 1:  # one wrapping folder, as `zip -r data.zip data/` makes
        inner = visible(entries[0])
        if len(inner) == 1 and inner[0].is_file():
            return inner[0]
        if inner and all(p.is_file() for p in inner):
            return folder  # not a wrapper: the one class folder of a batch (7/img-001.png, …)
        return entries[0]
    return folder
