"""Batch predictions (SageMaker's batch transform) inside a worker: stream the input in chunks,
write a CSV of label, confidence and class probabilities. Needs no TensorFlow when the model
version has an ONNX export."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, UnsupportedFormat
from loopml.models.signature import InputSignature
from loopml.platform import Platform
from loopml.core.jobstatus import CANCELLED, RUNNING, SUCCEEDED
from loopml.registry.resolve import lookup

CHUNK = 1024
LABEL_COLUMNS = ("label", "target", "class", "y", "species")


def _chunks_from_dataset(platform: Platform, source: dict[str, Any], limit: int | None):
    from loopml.datasets.service import load_version
    from loopml.datasets.content import raw_inputs

    ds = platform.datasets.get(source["name"], source["version"])
    content, splits = load_version(platform, ds)
    part = content.take(splits[source["split"]][:limit] if limit else splits[source["split"]])
    for start in range(0, len(part), CHUNK):
        sub = part.take(np.arange(start, min(start + CHUNK, len(part))))
        yield raw_inputs(sub), [str(v) for v in sub.labels], None


def _split_label(frame, kind: str, label_column: str | None):
    for col in ([label_column] if label_column else []) + list(LABEL_COLUMNS):
        if col and col in frame.columns:
            return frame.drop(columns=[col]), [str(v) for v in frame[col].tolist()]
    return frame, None


def _frame_to_raw(frame, kind: str, text_column: str):
    if kind == "text":
        if text_column not in frame.columns:
            raise InvalidInput(f"input has no text column {text_column!r}; columns: {', '.join(map(str, frame.columns))}")
        return frame[text_column].astype(str).tolist()
    if kind == "image":
        return frame.to_numpy(dtype=np.float32)
    return frame


def _frames(platform: Platform, key: str, name: str):
    """A csv or parquet file as DataFrames of at most CHUNK rows, streamed (never read whole)."""
    with platform.artifacts.open_read(key) as f:
        if name.endswith(".csv"):
            import pandas as pd

            yield from pd.read_csv(f, chunksize=CHUNK)
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(f).iter_batches(batch_size=CHUNK):
                yield batch.to_pandas()


def _image_chunks(files: list[Path], root: Path, shape: tuple[int, ...], limit: int | None
                  ) -> Iterator[tuple[Any, list[str] | None, list[str]]]:
    """Image files decoded to the model's signature, each row named by its file. Files in two or
    more class subfolders are labelled by their folder (the truth column), as a dataset would be."""
    from loopml.datasets.formats import read_images_as

    if not files:
        raise InvalidInput("the input holds no image files (.png, .jpg, …)")
    rel = [f.relative_to(root).parts if f != root else (f.name,) for f in files]
    folders = {parts[0] for parts in rel if len(parts) == 2}
    nested = all(len(parts) == 2 for parts in rel)
    truth = [parts[0] for parts in rel] if nested and len(folders) > 1 else None
    names = ["/".join(parts[1:] if nested and len(folders) == 1 else parts) for parts in rel]
    n = len(files) if limit is None else min(len(files), limit)
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        yield read_images_as(files[start:end], shape), (truth[start:end] if truth else None), names[start:end]


def _chunks_from_upload(platform: Platform, key: str, sig: InputSignature, limit: int | None
                        ) -> Iterator[tuple[Any, list[str] | None, list[str] | None]]:
    """(inputs, truth or None, file names or None) chunks of an uploaded input file, read as the
    model's signature says (image shape, text column, the label column a table may carry)."""
    from loopml.datasets.formats import IMAGE_EXTENSIONS

    kind, image_shape = sig.kind, sig.shape if sig.kind == "image" else None
    name = key.rsplit("/", 1)[-1].lower()
    remaining = limit
    if kind == "image" and image_shape and name.endswith((".zip", *IMAGE_EXTENSIONS)):
        from loopml.datasets.archive import dataset_root, safe_unzip
        from loopml.datasets.formats import image_files

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / key.rsplit("/", 1)[-1]
            platform.artifacts.get_file(key, local)
            if not name.endswith(".zip"):
                yield from _image_chunks([local], local, image_shape, limit)
                return
            root = dataset_root(safe_unzip(local, Path(tmp) / "data"))
            yield from _image_chunks([root] if root.is_file() else image_files(root), root, image_shape, limit)
        return
    if name.endswith((".csv", ".parquet", ".pq")):
        for frame in _frames(platform, key, name):
            if remaining is not None:
                frame = frame.iloc[:remaining]
                remaining -= len(frame)
            feats, truth = _split_label(frame, kind, sig.label_column)
            yield _frame_to_raw(feats, kind, sig.text_column), truth, None
            if remaining is not None and remaining <= 0:
                return
    elif name.endswith((".npz", ".npy", ".zip")):
        from loopml.datasets.formats import read_source
        from loopml.training.predict_input import NPZ_INPUTS
        from loopml.datasets.content import raw_inputs

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            platform.artifacts.get_file(key, local)
            if name.endswith(".npy"):
                x = np.load(local, mmap_mode="r")  # memory-mapped: larger than memory is fine
                n = len(x) if remaining is None else min(len(x), remaining)
                for start in range(0, n, CHUNK):
                    yield np.asarray(x[start:min(start + CHUNK, n)]), None, None
                return
            if name.endswith(".npz"):
                with np.load(local, allow_pickle=False) as z:
                    keys = {k.lower(): k for k in z.files}
                    xk = next((keys[k] for k in NPZ_INPUTS if k in keys), None)
                    if xk is None:
                        raise InvalidInput(f"{name}: no array named x/images/inputs (found {', '.join(z.files)})")
                    x = z[xk]
                    yk = next((keys[k] for k in ("y", "labels") if k in keys), None)
                    y = [str(v) for v in z[yk]] if yk else None
                n = len(x) if remaining is None else min(len(x), remaining)
                for start in range(0, n, CHUNK):
                    yield x[start:start + CHUNK][: n - start], (y[start:min(start + CHUNK, n)] if y else None), None
                return
            from loopml.datasets.archive import dataset_root, safe_unzip

            folder = dataset_root(safe_unzip(Path(local), Path(tmp) / "data"))
            content = read_source(str(folder), "images" if kind == "image" else "text")
            n = len(content) if remaining is None else min(len(content), remaining)
            for start in range(0, n, CHUNK):
                sub = content.take(np.arange(start, min(start + CHUNK, n)))
                yield raw_inputs(sub), [str(v) for v in sub.labels], None
    else:
        raise UnsupportedFormat(f"input {name!r}: use .csv, .parquet, .npz, .npy, a .zip of a folder, "
                                "or image files for image models")


class _Cancelled(Exception):
    pass


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None) -> None:
    """Predict, then record success; a cancel request stops it between chunks (no output kept)."""
    try:
        _run(platform, job, sync_logs)
    except _Cancelled:
        print("cancelled; partial output discarded", flush=True)
        sync_logs()
        platform.jobs.transition(job["id"], CANCELLED, expect=[RUNNING], reason="cancelled by request")


def _run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None]) -> None:
    from loopml.models.bundle import load_bundle

    spec = job["spec"]
    mv = lookup(platform, spec["model_name"], spec["model_version"])
    output_key = join("jobs", job["id"], "output", "predictions.csv")
    rows = 0
    correct = 0
    with_truth = 0
    with tempfile.TemporaryDirectory() as tmp:
        platform.artifacts.download_dir(mv["artifact_prefix"], tmp, required=("loopml.json",))
        bundle = load_bundle(tmp, runtime="auto")
        print(f"model {mv['ref']} loaded with runtime {bundle.runtime_name}", flush=True)
        labels = list(bundle.label_names)
        source = spec["input"]
        if source["type"] == "dataset":
            chunks = _chunks_from_dataset(platform, source, spec.get("limit"))
        else:
            chunks = _chunks_from_upload(platform, source["key"], InputSignature.from_manifest(bundle.meta, kind=bundle.kind),
                                         spec.get("limit"))
        with platform.artifacts.open_write(output_key) as raw:
            out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = None
            for inputs, truth, names in chunks:
                proba = bundle.predict_proba(inputs)
                if writer is None:
                    writer = csv.writer(out)
                    writer.writerow(["row"] + (["file"] if names is not None else [])
                                    + (["truth"] if truth is not None else [])
                                    + ["label", "confidence"] + [f"p_{c}" for c in labels])
                best = proba.argmax(axis=1)
                for i in range(len(proba)):
                    label = labels[best[i]]
                    row = ([rows] + ([names[i]] if names is not None else [])
                           + ([truth[i]] if truth is not None else []) + [label, f"{proba[i, best[i]]:.6f}"])
                    writer.writerow(row + [f"{p:.6f}" for p in proba[i]])
                    if truth is not None:
                        with_truth += 1
                        correct += int(truth[i] == label)
                    rows += 1
                if platform.jobs.heartbeat(job["id"], {"rows": rows}):
                    raise _Cancelled()
            if writer is None:
                raise InvalidInput("the input has no rows")
            out.flush()
            out.detach()
    result = {"output_key": output_key, "rows": rows, "model": {"ref": mv["ref"]},
              "accuracy": round(correct / with_truth, 4) if with_truth else None}
    print(f"wrote {rows} predictions to {output_key}", flush=True)
    sync_logs()
    platform.jobs.transition(job["id"], SUCCEEDED, expect=[RUNNING], result=result)
