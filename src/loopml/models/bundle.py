"""A model version on disk: one folder the registry stores and serving loads.

    model.keras      Keras model (only ever loaded with safe_mode=True unless trusted)
    model.onnx       optional ONNX export, used by serving when present and verified
    loopml.json      what this is: kind, labels, input signature, features, versions, meta
    tokenizer.json   (text) feature files written by the fitted Features
    reference.json   optional raw inputs + the training process's probabilities for them

Loading with the ONNX runtime imports neither keras nor tensorflow.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound
from loopml.models.features import Features, feature_files_needed, features_from_config
from loopml.models.runtime import KerasRuntime, OnnxRuntime, Runtime
from loopml.models.signature import MANIFEST

FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.json"
ONNX_TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX vs Keras
PREDICT_CHUNK = 256


# --------------------------------------------------------------------------- saving


def save_bundle(dirpath: str | Path, model: Any, features: Features, meta: dict[str, Any],
                reference_inputs: Any = None) -> dict[str, Any]:
    """Write a model version folder; returns the loopml.json content.

    ``meta`` must hold ``label_names`` (or ``schema.classes``); everything in it (dataset
    version, job id, hparams, metrics...) is recorded. ``reference_inputs`` are a few RAW
    rows whose probabilities in this process are stored to check later loads against.
    """
    import keras

    folder = Path(dirpath)
    folder.mkdir(parents=True, exist_ok=True)
    label_names = [str(x) for x in (meta.get("label_names")
                                    or (meta.get("schema") or {}).get("classes") or [])]
    n_outputs = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
    if not label_names or (n_outputs is not None and n_outputs != len(label_names)):
        raise InvalidInput(f"save_bundle needs meta['label_names'] matching the model's "
                           f"{n_outputs} outputs, got {label_names}")

    reference_x = None if reference_inputs is None else features.transform(reference_inputs)
    probe = (reference_x[:8] if reference_x is not None and len(reference_x)
             else features.example_batch(4))
    probe_probs = keras_probabilities(model, probe)  # also "calls" the model, needed by export

    model.save(folder / KERAS_FILE)
    for name, content in features.files().items():
        _write_bytes(folder / name, content)

    runtimes, onnx_info = ["keras"], _export_onnx(model, folder / ONNX_FILE, probe, probe_probs)
    if onnx_info["ok"]:
        runtimes = ["onnx", "keras"]

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": features.kind,
        "label_names": label_names,
        "input": features.input_signature(),
        "features": features.to_config(),
        "runtimes": runtimes,
        "onnx": {k: v for k, v in onnx_info.items() if k != "ok"},
        "files": sorted([KERAS_FILE, *features.files(), *([ONNX_FILE] if onnx_info["ok"]
                                                          else [])]),
        "frameworks": framework_versions(keras.backend.backend()),
    }
    if reference_x is not None:
        probs = keras_probabilities(model, reference_x)
        reference = {"inputs": features.raw_to_json(reference_inputs),
                     "probabilities": probs.tolist(),
                     "labels": [label_names[i] for i in probs.argmax(axis=1)]}
        _write_bytes(folder / REFERENCE_FILE, json.dumps(reference).encode("utf-8"))
        manifest["files"] = sorted([*manifest["files"], REFERENCE_FILE])
    else:
        (folder / REFERENCE_FILE).unlink(missing_ok=True)  # never keep a stale one
    for key, value in meta.items():
        manifest.setdefault(key, value)  # the caller cannot overwrite what the files say
    _write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2, default=_json_default)
                 .encode("utf-8"))
    return json.loads((folder / MANIFEST).read_text("utf-8"))


def keras_probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """In-process probabilities (inference mode), chunked like serving."""
    if len(x) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    chunks = [np.asarray(model(x[i:i + PREDICT_CHUNK], training=False), dtype=np.float32)
              for i in range(0, len(x), PREDICT_CHUNK)]
    return np.concatenate(chunks, axis=0)


def _export_onnx(model: Any, path: Path, probe: np.ndarray, expected: np.ndarray
                 ) -> dict[str, Any]:
    """Export and verify against Keras; on failure remove the file and say why."""
    try:
        model.export(str(path), format="onnx", verbose=False)
    except Exception as exc:  # tf2onnx fails in many ways (unsupported ops, versions)
        path.unlink(missing_ok=True)
        return {"ok": False, "error": f"export failed: {type(exc).__name__}: {exc}"[:2000]}
    try:
        got = OnnxRuntime(path).predict(probe)
    except Exception as exc:
        path.unlink(missing_ok=True)
        return {"ok": False, "error": f"ONNX Runtime cannot run the export: {exc}"[:2000]}
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not diff <= ONNX_TOLERANCE:
        path.unlink(missing_ok=True)
        return {"ok": False, "max_abs_diff": diff if np.isfinite(diff) else None,
                "error": f"ONNX output disagrees with Keras (max abs diff {diff:.3g} > "
                         f"{ONNX_TOLERANCE:g}, shapes {got.shape} vs {expected.shape})"}
    return {"ok": True, "max_abs_diff": diff, "checked_rows": int(len(probe))}


def framework_versions(backend: str | None = None) -> dict[str, str | None]:
    def version(*dists: str) -> str | None:
        for dist in dists:
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {"python": platform.python_version(), "numpy": version("numpy"),
            "keras": version("keras"),
            "tensorflow": version("tensorflow", "tensorflow-cpu"),
            "onnxruntime": version("onnxruntime"), "tokenizers": version("tokenizers"),
            "keras_backend": backend or os.environ.get("KERAS_BACKEND", "tensorflow")}


def _write_bytes(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON-serialisable")


# --------------------------------------------------------------------------- loading


class ModelBundle:
    """A loaded model version: RAW inputs in, class probabilities out."""

    def __init__(self, path: Path, manifest: dict[str, Any], features: Features,
                 runtime: Runtime) -> None:
        self.path = path
        self.meta = manifest
        self.features = features
        self.runtime = runtime
        self.label_names: list[str] = list(manifest["label_names"])
        self.kind: str = manifest["kind"]

    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    def predict_proba(self, raw_inputs: Any, batch_size: int = PREDICT_CHUNK) -> np.ndarray:
        x = self.features.transform(raw_inputs)
        n_classes = len(self.label_names)
        if len(x) == 0:
            return np.zeros((0, n_classes), dtype=np.float32)
        out = np.concatenate([self.runtime.predict(x[i:i + batch_size])
                              for i in range(0, len(x), batch_size)], axis=0)
        if out.shape != (len(x), n_classes):
            raise CorruptArtifact(f"model in {self.path} returned shape {out.shape}, "
                                  f"expected ({len(x)}, {n_classes})")
        return out

    def predict(self, raw_inputs: Any) -> list[dict[str, Any]]:
        probs = self.predict_proba(raw_inputs)
        results = []
        for row in probs:
            best = int(row.argmax())
            results.append({"label": self.label_names[best], "confidence": float(row[best]),
                            "probabilities": {name: float(p)
                                              for name, p in zip(self.label_names, row)}})
        return results

    def reference(self) -> dict[str, Any] | None:
        """reference.json (raw inputs + training-time probabilities) if the version has one."""
        path = self.path / REFERENCE_FILE
        if not path.is_file():
            return None
        return _read_json(path, self.path)

    def reference_max_abs_diff(self) -> float | None:
        """How far this runtime's probabilities are from the training process's."""
        ref = self.reference()
        if ref is None:
            return None
        got = self.predict_proba(ref["inputs"])
        return float(np.max(np.abs(got - np.asarray(ref["probabilities"], dtype=np.float32))))


def load_bundle(dirpath: str | Path, runtime: str = "auto", trusted: bool = False,
                intra_op_threads: int = 1) -> ModelBundle:
    """Load a model version folder.

    runtime: "auto" (ONNX when the version has a verified export, else Keras), "onnx" or
    "keras". ``trusted=True`` lets Keras load files that safe mode refuses (Lambda layers).
    """
    folder = Path(dirpath)
    if not folder.is_dir():
        raise NotFound(f"model folder {folder} does not exist")
    manifest = _read_json(folder / MANIFEST, folder)
    for key in ("format_version", "kind", "label_names", "features"):
        if key not in manifest:
            raise CorruptArtifact(f"{folder / MANIFEST} lacks {key!r}")
    if not isinstance(manifest["format_version"], int) or \
            manifest["format_version"] > FORMAT_VERSION:
        raise CorruptArtifact(f"{folder / MANIFEST} has format_version "
                              f"{manifest['format_version']!r}; this LoopML reads up to "
                              f"{FORMAT_VERSION}")

    files: dict[str, bytes] = {}
    for name in feature_files_needed(manifest["features"]):
        if not (folder / name).is_file():
            raise CorruptArtifact(f"{folder} is missing feature file {name}")
        files[name] = (folder / name).read_bytes()
    try:
        features = features_from_config(manifest["features"], files)
    except CorruptArtifact as exc:
        raise CorruptArtifact(f"{folder / MANIFEST}: {exc.message}") from None

    if not trusted:
        _refuse_code_layers(folder / KERAS_FILE)
    return ModelBundle(folder, manifest, features,
                       _make_runtime(folder, manifest, runtime, trusted, intra_op_threads))


def _refuse_code_layers(keras_file: Path) -> None:
    """Refuse a version whose model carries Python code (a Lambda layer) whatever the runtime.

    Keras' safe mode only guards the Keras loader; the ONNX export of such a model would
    otherwise serve that code's traced effect without anyone having marked the version trusted.
    """
    import zipfile

    if not keras_file.is_file():
        return
    try:
        with zipfile.ZipFile(keras_file) as zf:
            config = zf.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise CorruptArtifact(f"{keras_file} cannot be read: {exc}") from None
    if b'"class_name": "Lambda"' in config or b'"class_name":"Lambda"' in config:
        raise CorruptArtifact(f"{keras_file} contains a Lambda layer (arbitrary Python code); "
                              "safe mode refuses it unless the version is marked trusted")


def _make_runtime(folder: Path, manifest: dict[str, Any], runtime: str, trusted: bool,
                  intra_op_threads: int) -> Runtime:
    if runtime not in ("auto", "onnx", "keras"):
        raise InvalidInput(f"runtime must be auto, onnx or keras, got {runtime!r}")
    has_onnx = "onnx" in manifest.get("runtimes", []) and (folder / ONNX_FILE).is_file()
    if runtime == "onnx" and not has_onnx:
        reason = (manifest.get("onnx") or {}).get("error") or f"{ONNX_FILE} is missing"
        raise InvalidInput(f"model version {folder} has no ONNX runtime: {reason}")
    if runtime == "onnx" or (runtime == "auto" and has_onnx and _onnxruntime_installed()):
        return OnnxRuntime(folder / ONNX_FILE, intra_op_threads=intra_op_threads)
    return KerasRuntime.load(folder / KERAS_FILE, trusted=trusted)


def _onnxruntime_installed() -> bool:
    if "onnxruntime" in sys.modules:
        return True
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CorruptArtifact(f"model folder {folder} has no {path.name}")
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptArtifact(f"{path.name} in {folder} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptArtifact(f"{path.name} in {folder} is not a JSON object")
    return doc


__all__ = ["ModelBundle", "save_bundle", "load_bundle", "keras_probabilities",
           "framework_versions", "FORMAT_VERSION"]
