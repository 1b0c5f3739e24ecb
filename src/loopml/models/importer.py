"""Bring your own model: a ``.keras`` file, a TensorFlow SavedModel folder or an ``.onnx`` file
trained elsewhere becomes a model-version folder (see bundle.py) that serving, batch prediction
and evaluation load exactly like a trained one.

    .keras       loaded with Keras safe mode (a Lambda layer is refused), saved and exported to
                 ONNX by ``save_bundle`` — verified against Keras like a trained version
    SavedModel   converted to ONNX by tf2onnx, then imported as an .onnx file
    .onnx        checked with ONNX Runtime; the bundle serves it as is (runtime "onnx" only)

The model takes what a client sends (no LoopML preprocessing is fitted): images as
(H, W, C) float pixels, table rows as one numeric column per input feature, texts through a
given HuggingFace ``tokenizer.json``. Its output must be one probability per class (softmax).

Run as ``python -m loopml.models.importer REQUEST.json`` by the control plane, so Keras and
TensorFlow never load into the API process; the answer (manifest or error) goes to
``REQUEST.json``'s ``result`` path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from loopml.core.errors import InvalidInput, LoopMLError
from loopml.models.bundle import (FORMAT_VERSION, MANIFEST, ONNX_FILE, framework_versions, keras_probabilities,
                                  load_bundle, save_bundle)
from loopml.models.features import Features, ImageFeatures, TabularFeatures, TextFeatures

KINDS = ("image", "text", "tabular")
PROBE_ROWS = 8
PROB_TOLERANCE = 1e-3  # rows of a softmax sum to 1 within float error


def source_format(path: Path) -> str:
    """keras | onnx | savedmodel — from the name (a folder: a SavedModel); refused otherwise."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise InvalidInput("a folder is imported only as a TensorFlow SavedModel (it holds saved_model.pb)")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".onnx"):
        return suffix[1:]
    raise InvalidInput(f"{path.name!r} is not a model file LoopML imports: use a .keras file, an .onnx file "
                       "or a SavedModel folder")


# --------------------------------------------------------------------------- the model's signature


def _shape(model_shape: list[Any], given: list[int] | None, display: str) -> list[int]:
    """The shape of one row: the model's, completed or checked by ``--input-shape``."""
    dims = list(model_shape)
    if given is not None:
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
            shown = tuple("?" if d is None else d for d in dims)
            raise InvalidInput(f"--input-shape {','.join(map(str, given))} does not match {display}'s "
                               f"input shape {shown}")
        return list(given)
    if any(d is None for d in dims) or not dims:
        shown = tuple("?" if d is None else d for d in dims)
        raise InvalidInput(f"{display} has an input of unknown size {shown}: pass --input-shape (e.g. 28,28,1)")
    return [int(d) for d in dims]


def _features(kind: str | None, shape: list[int], integer_input: bool, columns: list[str] | None,
              tokenizer: str | None, display: str) -> Features:
    if kind is None:
        kind = "image" if len(shape) == 3 else "text" if integer_input else "tabular" if len(shape) == 1 else None
    if kind == "image":
        if len(shape) != 3:
            raise InvalidInput(f"{display}: an image model takes (height, width, channels) rows; its input is "
                               f"{tuple(shape)}")
        return ImageFeatures(shape, 0.0, 1.0)  # mean 0, std 1: pixels reach the model as sent
    if kind == "tabular":
        if len(shape) != 1:
            raise InvalidInput(f"{display}: a tabular model takes flat rows; its input is {tuple(shape)}")
        names = columns or [f"x{i}" for i in range(shape[0])]
        if len(names) != shape[0] or len(set(names)) != len(names):
            raise InvalidInput(f"--columns names {len(names)} distinct column(s); {display} takes {shape[0]} features")
        cols = [{"name": n, "type": "numeric", "fill": 0.0, "indicator": False} for n in names]
        return TabularFeatures(cols, np.zeros(shape[0]), np.ones(shape[0]))
    if kind == "text":
        if len(shape) != 1:
            raise InvalidInput(f"{display}: a text model takes token-id rows (max_length,); its input is "
                               f"{tuple(shape)}")
        if tokenizer is None:
            raise InvalidInput(f"{display} is a text model: pass --tokenizer tokenizer.json (HuggingFace tokenizers)")
        return TextFeatures(tokenizer, shape[0], "text")
    raise InvalidInput(f"{display}: cannot tell what the model takes from its input {tuple(shape)}; "
                       f"pass --kind {'|'.join(KINDS)}")


def _labels(labels: list[str] | None, width: int, display: str) -> list[str]:
    if width < 2:
        raise InvalidInput(f"{display} has {width} output(s); LoopML serves classifiers with one softmax "
                           "probability per class (at least 2)")
    if labels is None:
        return [str(i) for i in range(width)]  # inferred from the output width
    if len(labels) != width:
        raise InvalidInput(f"{len(labels)} labels given but {display} has {width} outputs (one per class)")
    return labels


def _check_probabilities(probs: np.ndarray, display: str) -> None:
    ok = (np.isfinite(probs).all() and probs.min() >= -PROB_TOLERANCE and probs.max() <= 1 + PROB_TOLERANCE
          and np.allclose(probs.sum(axis=1), 1.0, atol=PROB_TOLERANCE))
    if not ok:
        raise InvalidInput(f"{display}'s outputs are not class probabilities (each row must sum to 1): "
                           "end the model with a softmax")


# --------------------------------------------------------------------------- per format


def _from_keras(src: Path, out: Path, request: dict[str, Any], display: str) -> dict[str, Any]:
    import keras

    import loopml.models.layers  # noqa: F401 - a LoopML-made .keras file uses Standardize

    try:
        model = keras.saving.load_model(src, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(src), display)
        if "safe_mode" in text or "lambda" in text.lower() or "unsafe" in text.lower():
            raise InvalidInput(f"{display} was refused by Keras safe mode: it carries Python code that would run "
                               f"on load (a Lambda layer). Keras said: {text[:300]}") from None
        raise InvalidInput(f"{display} is not a Keras model file Keras can load: {text[:300]}") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidInput(f"{display} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                           "LoopML serves models with one input and one output")
    shape = _shape(list(model.inputs[0].shape[1:]), request.get("input_shape"), display)
    integer = "int" in str(model.inputs[0].dtype)
    features = _features(request.get("kind"), shape, integer, request.get("columns"),
                         request.get("tokenizer"), display)
    probs = keras_probabilities(model, features.example_batch(PROBE_ROWS))
    if probs.ndim != 2:
        raise InvalidInput(f"{display} outputs shape {probs.shape[1:]} per row; LoopML needs (classes,)")
    labels = _labels(request.get("labels"), probs.shape[1], display)
    _check_probabilities(probs, display)
    return save_bundle(out, model, features, {**request["meta"], "label_names": labels})


def _from_onnx(src: Path, out: Path, request: dict[str, Any], display: str) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(str(src), display)
        raise InvalidInput(f"{display} is not an ONNX model ONNX Runtime can load: {text[:300]}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise InvalidInput(f"{display} has {len(inputs)} inputs; LoopML serves models with one input")
    dims = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape[1:]]
    shape = _shape(dims, request.get("input_shape"), display)
    features = _features(request.get("kind"), shape, "int" in inputs[0].type, request.get("columns"),
                         request.get("tokenizer"), display)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / ONNX_FILE)
    from loopml.models.runtime import OnnxRuntime

    probe = features.example_batch(PROBE_ROWS)
    try:
        probs = OnnxRuntime(folder / ONNX_FILE).predict(probe)
    except Exception as exc:  # noqa: BLE001 - the graph refused a batch of its own signature
        raise InvalidInput(f"{display} cannot run a batch of shape {probe.shape}: "
                           f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from None
    if probs.ndim != 2 or probs.shape[0] != PROBE_ROWS:
        raise InvalidInput(f"{display} ({outputs[0].name}) returned shape {probs.shape} for {PROBE_ROWS} rows; "
                           "LoopML needs (rows, classes)")
    labels = _labels(request.get("labels"), probs.shape[1], display)
    _check_probabilities(probs, display)
    files = features.files()
    for fname, content in files.items():
        (folder / fname).write_bytes(content)
    manifest = {"format_version": FORMAT_VERSION, "kind": features.kind, "label_names": labels,
                "input": features.input_signature(), "features": features.to_config(), "runtimes": ["onnx"],
                "onnx": {"checked_rows": PROBE_ROWS, "source": "imported"},
                "files": sorted([ONNX_FILE, *files]),
                "frameworks": {k: v for k, v in framework_versions().items() if k != "keras_backend"}}
    for key, value in request["meta"].items():
        manifest.setdefault(key, value)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), "utf-8")
    return manifest


def _from_savedmodel(src: Path, out: Path, request: dict[str, Any], display: str) -> dict[str, Any]:
    """tf2onnx converts the serving signature; the result is imported as an .onnx file."""
    converted = out.parent / "converted.onnx"
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(src),
                           "--output", str(converted)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not converted.is_file():
        lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln] or proc.stderr.splitlines()
        why = (lines[-1] if lines else f"exit code {proc.returncode}").replace(str(src), display)
        raise InvalidInput(f"{display}: the SavedModel cannot be converted to ONNX (tf2onnx): {why[:300]}")
    return _from_onnx(converted, out, request, display)


def build(request: dict[str, Any]) -> dict[str, Any]:
    """``request``: source, out, display (the name users know), format, labels, input_shape, kind,
    columns, tokenizer (its JSON text), meta. Writes the bundle into ``out``; returns its manifest."""
    src, out, display = Path(request["source"]), Path(request["out"]), request["display"]
    convert = {"keras": _from_keras, "onnx": _from_onnx, "savedmodel": _from_savedmodel}[request["format"]]
    manifest = convert(src, out, request, display)
    bundle = load_bundle(out, runtime="auto")  # what serving does: it must load and answer RAW rows
    features = bundle.features
    raw: Any = (features.example_batch(2) if isinstance(features, ImageFeatures)
                else [{c["name"]: 0.0 for c in features.columns}] * 2 if isinstance(features, TabularFeatures)
                else ["an example", "another one"])
    probs = bundle.predict_proba(raw)
    if probs.shape != (2, len(bundle.label_names)):
        raise InvalidInput(f"{display}: the imported version answers shape {probs.shape}")
    return manifest


def main(argv: list[str]) -> int:
    path = Path(argv[1])
    request = json.loads(path.read_text("utf-8"))
    try:
        answer: dict[str, Any] = {"manifest": build(request)}
    except LoopMLError as exc:
        answer = {"error": exc.to_dict()}
    except Exception as exc:  # noqa: BLE001 - the file's problem as far as the user can act on it
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        answer = {"error": {"code": "invalid_input", "message": f"{request.get('display')} cannot be imported: "
                            f"{type(exc).__name__}: {text[:300]}".replace(request.get("source", "\0"),
                                                                         request.get("display", ""))}}
    Path(request["result"]).write_text(json.dumps(answer, default=str), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
