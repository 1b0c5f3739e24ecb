"""Registering a model trained elsewhere (``loopml models import``) as the next version of a name.

The file is checked and turned into a model-version folder by ``python -m loopml.models.importer``
in a child process (Keras/TensorFlow stay out of the API process; a hostile file cannot take the
server down); the folder is uploaded, then recorded — the artifacts exist before the record that
points at them, and a refused file registers nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, LoopMLError, error_from_dict
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.registry.registration import register_import, validate_model_name

IMPORT_TIMEOUT_S = 1800


def parse_labels(labels: Any) -> list[str] | None:
    """A list, or text: a JSON array, one label a line, or comma-separated."""
    if labels is None:
        return None
    if isinstance(labels, str):
        text = labels.strip()
        if text.startswith("["):
            try:
                labels = json.loads(text)
            except ValueError:
                raise InvalidInput("labels: not a valid JSON array") from None
        else:
            labels = [x for x in (text.splitlines() if "\n" in text else text.split(","))]
    if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
        raise InvalidInput("labels must be a list of names, e.g. --labels cat,dog")
    out = [str(x).strip() for x in labels if str(x).strip()]
    if not out:
        return None
    if len(set(out)) != len(out):
        dupes = sorted({x for x in out if out.count(x) > 1})
        raise InvalidInput(f"labels must be distinct; repeated: {', '.join(dupes)}")
    return out


def parse_shape(shape: Any) -> list[int] | None:
    """'28,28,1' or [28, 28, 1] → [28, 28, 1] (one row, no batch dimension)."""
    if shape is None or shape == "":
        return None
    parts = shape.replace("x", ",").split(",") if isinstance(shape, str) else shape
    try:
        dims = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise InvalidInput(f"--input-shape {shape!r}: use positive numbers, e.g. 28,28,1") from None
    if not dims or any(d < 1 for d in dims):
        raise InvalidInput(f"--input-shape {shape!r}: use positive numbers, e.g. 28,28,1")
    return dims


def import_model(platform: Platform, *, name: str, source: Path, filename: str, labels: Any = None,
                 input_shape: Any = None, kind: str | None = None, columns: Any = None,
                 tokenizer: bytes | None = None) -> dict[str, Any]:
    """Check, convert, upload and register ``source`` (a .keras/.onnx file or a SavedModel folder)
    as ``name``:<next>. ``filename`` is what the user called it (messages never show temp paths)."""
    from loopml.models.importer import KINDS, source_format

    validate_model_name(name)
    fmt = source_format(source)
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"--kind {kind!r} must be one of {', '.join(KINDS)}")
    cols = parse_labels(columns)  # the same list syntax
    tokenizer_text = None
    if tokenizer is not None:
        try:
            tokenizer_text = tokenizer.decode("utf-8")
            json.loads(tokenizer_text)
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("--tokenizer must be a HuggingFace tokenizer.json file") from None
    sha = _sha256(source)
    request = {"format": fmt, "display": filename, "labels": parse_labels(labels),
               "input_shape": parse_shape(input_shape), "kind": kind, "columns": cols, "tokenizer": tokenizer_text,
               "meta": {"template": "imported", "hparams": {}, "metrics": {},
                        "imported": {"file": filename, "format": fmt, "sha256": sha}}}
    tmp_root = platform.settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="import-") as tmp:
        manifest = _convert(request, source, Path(tmp), platform.settings)
        prefix = join("models", name, f"import-{uuid.uuid4().hex[:12]}")
        platform.artifacts.upload_dir(Path(tmp) / "bundle", prefix)
    lineage = {"source": "imported", "file": filename, "format": fmt, "sha256": sha,
               "frameworks": manifest.get("frameworks", {})}
    fields = {"dataset": None, "kind": manifest["kind"], "template": "imported", "hparams": {}, "metrics": {},
              "lineage": lineage, "runtimes": manifest.get("runtimes", ["keras"]), "artifact_prefix": prefix}
    try:
        record = register_import(platform, name, fields=fields)
    except BaseException:
        platform.artifacts.delete(prefix)
        raise
    return {**record, "label_names": manifest["label_names"], "input": manifest.get("input"),
            "onnx": manifest.get("onnx")}


def _convert(request: dict[str, Any], source: Path, tmp: Path, settings: Settings) -> dict[str, Any]:
    req_path, result = tmp / "request.json", tmp / "result.json"
    req_path.write_text(json.dumps({**request, "source": str(source), "out": str(tmp / "bundle"),
                                    "result": str(result)}), "utf-8")
    try:
        proc = subprocess.run([sys.executable, "-m", "loopml.models.importer", str(req_path)],
                              capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              env=settings.child_env("importer"))
    except subprocess.TimeoutExpired:
        raise LoopMLError(f"importing {request['display']} took longer than {IMPORT_TIMEOUT_S} s") from None
    if not result.is_file():
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise LoopMLError(f"the import process for {request['display']} died: {tail[:300]}")
    answer = json.loads(result.read_text("utf-8"))
    if "error" in answer:
        raise error_from_dict(answer["error"])
    return answer["manifest"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        with p.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
    return digest.hexdigest()
