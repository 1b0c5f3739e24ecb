"""A function's code: a single ``.py`` file or a zip of a folder, checked without running it.

The server never imports user code: the handler's module is found in the upload and parsed
with ``ast`` to check that it defines the handler's name, so a typo or a syntax error is a 400
at creation instead of a failed invocation later.
"""

from __future__ import annotations

import ast
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from loopml.core.errors import InvalidInput

HANDLER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_CODE_BYTES = 50 * 1024 * 1024  # Lambda's limit for a direct upload
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
DEFAULT_HANDLER_ATTR = "handler"


def split_handler(handler: str) -> tuple[str, str]:
    """'pkg.mod.fn' -> ('pkg.mod', 'fn')."""
    if not HANDLER_RE.fullmatch(handler or ""):
        raise InvalidInput(f"handler {handler!r} is not valid: use MODULE.FUNCTION "
                           "(e.g. handler.handler or app.main.run)")
    module, _, attr = handler.rpartition(".")
    return module, attr


@dataclass(frozen=True)
class CodeBundle:
    """Validated code: what is stored (``filename`` + ``data``) and the handler it runs."""

    filename: str  # "<stem>.py" or "code.zip"
    data: bytes
    handler: str
    is_zip: bool


def _is_zip(filename: str, data: bytes) -> bool:
    return filename.lower().endswith(".zip") or data[:4] == b"PK\x03\x04"


def _entry_problem(name: str) -> str | None:
    """Why a zip entry cannot be a file of the code folder (None: it can). ``.`` would be the
    folder itself, ``..``/absolute paths point out of it, a backslash or NUL is no portable name."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if "\\" in name or "\x00" in name:
        return "contains a backslash or NUL character"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "points outside the code folder"
    if "." in parts or "" in parts:
        return "has an empty or '.' path segment"
    return None


def zip_members(data: bytes) -> dict[str, bytes]:
    """Files of the zip by path, without a single top folder every entry shares (a zipped
    folder) — the layout the function's code directory gets."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput("function code: the upload is not a valid .zip file") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
        raise InvalidInput(f"function code: unzipped size is over {MAX_UNZIPPED_BYTES // 2**20} MiB")
    for info in zf.infolist():
        problem = _entry_problem(info.filename)
        if problem:
            raise InvalidInput(f"function code: zip entry {info.filename!r} {problem}")
    names = [PurePosixPath(i.filename) for i in infos]
    tops = {p.parts[0] for p in names if len(p.parts) > 1}
    strip = len(tops) == 1 and all(len(p.parts) > 1 for p in names)
    out: dict[str, bytes] = {}
    for info, path in zip(infos, names):
        rel = PurePosixPath(*path.parts[1:]) if strip else path
        out[rel.as_posix()] = zf.read(info)
    return out


def _check_defines(source: bytes, filename: str, attr: str, handler: str) -> None:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        raise InvalidInput(f"function code {filename}: syntax error at {where}: {exc.msg}") from None
    except ValueError as exc:  # e.g. null bytes
        raise InvalidInput(f"function code {filename}: cannot be parsed: {exc}") from None
    if attr not in _top_level_names(tree):
        raise InvalidInput(f"handler {handler!r}: {filename} defines no top-level {attr!r} "
                           "(expected `def " + attr + "(event, context)`)")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):  # conditional definitions count
            inner = ast.Module(body=[*node.body, *getattr(node, "orelse", []),
                                     *[h for handler in getattr(node, "handlers", []) for h in handler.body]],
                               type_ignores=[])
            names |= _top_level_names(inner)
    return names


def prepare_code(filename: str, data: bytes, handler: str | None) -> CodeBundle:
    """Check an upload (a ``.py`` or a ``.zip``) and the handler it names; the stored form."""
    if not data:
        raise InvalidInput("function code: the uploaded file is empty")
    if len(data) > MAX_CODE_BYTES:
        raise InvalidInput(f"function code: {len(data) // 2**20} MiB is over the "
                           f"{MAX_CODE_BYTES // 2**20} MiB limit")
    if _is_zip(filename, data):
        members = zip_members(data)
        if handler is None:
            tops = [p for p in members if "/" not in p and p.endswith(".py")]
            if len(tops) != 1:
                raise InvalidInput("function code: a folder needs --handler MODULE.FUNCTION "
                                   f"(top-level .py files: {', '.join(sorted(tops)) or 'none'})")
            handler = f"{tops[0][:-3]}.{DEFAULT_HANDLER_ATTR}"
        module, attr = split_handler(handler)
        base = module.replace(".", "/")
        path = next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in members), None)
        if path is None:
            raise InvalidInput(f"handler {handler!r}: module {module!r} not found in the code "
                               f"(no {base}.py or {base}/__init__.py)")
        _check_defines(members[path], path, attr, handler)
        return CodeBundle("code.zip", data, handler, True)
    if not filename.endswith(".py"):
        raise InvalidInput(f"function code {filename!r}: give a .py file or a folder (zipped)")
    stem = PurePosixPath(filename).name[:-3]
    if not IDENT_RE.fullmatch(stem):
        raise InvalidInput(f"function code {filename!r}: the file name is not an importable module "
                           f"name; rename it (e.g. {re.sub(r'[^A-Za-z0-9_]', '_', stem) or 'handler'}.py)")
    module, attr = split_handler(handler or f"{stem}.{DEFAULT_HANDLER_ATTR}")
    if module != stem:
        raise InvalidInput(f"handler {handler!r}: the module of a single file is its name {stem!r} "
                           f"(use {stem}.{attr})")
    _check_defines(data, f"{stem}.py", attr, f"{module}.{attr}")
    return CodeBundle(f"{stem}.py", data, f"{module}.{attr}", False)
