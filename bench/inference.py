"""Serving-path speed: ONNX Runtime vs Keras vs a plain ``model.predict``, side by side in one run.

Trains the seed CNN on `mnist` and the seed RNN on `bbc-news` for 1 epoch each with the
loopml.models API (stratified split, features fitted on the training split), saves each as a
bundle, loads it back with ``runtime="onnx"`` (1 and 2 intra-op threads) and ``runtime="keras"``
(KerasRuntime: ``predict_on_batch`` behind a lock), and measures, raw inputs in, probabilities out:

    single   ms per call for 1 row (one image's pixels / one article's text)
    batch    rows/s for 64-row calls

against the naive baseline ``model.predict(features.transform(raw), verbose=0)`` (Keras'
default batch_size=32, so a 64-row call is 2 steps). Variants are interleaved, their order
rotated every round; a round's figure is the median per-call time, the reported figure the
median over rounds. Also prints the max abs difference of ONNX vs Keras probabilities on 256
test rows. Not a test: figures only. On a shared machine read the ratios, not the absolutes.

    .venv/bin/python bench/inference.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _common import log_stderr as log  # noqa: E402 - bench/_common.py

BATCH = 64
DIFF_ROWS = 256
BASELINE = "model.predict"


def prepare(sample: str, template: str, folder: Path, train_rows: int | None) -> dict[str, Any]:
    """Train `template` on `sample` for 1 epoch, save a bundle, return test inputs and bundles."""
    import keras

    from loopml.datasets.samples import load_sample
    from loopml.datasets.schema import infer_schema
    from loopml.datasets.splits import stratified_split
    from loopml.models.bundle import load_bundle, save_bundle
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model

    content = load_sample(sample)
    schema = infer_schema(content)
    classes = [str(c) for c in schema["classes"]]
    splits = stratified_split(content.labels, seed=42)
    train_idx = splits["train"]
    if train_rows is not None and train_rows < len(train_idx):
        train_idx = np.sort(np.random.default_rng(0).choice(train_idx, train_rows, replace=False))
    train, test = content.take(train_idx), content.take(splits["test"])
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(c)] for c in train.labels], dtype=np.int64)

    hp = validate_hparams(template, {"epochs": 1})
    features = fit_features(train, hp, schema)
    model = build_model(template, hp, schema, features)
    t0 = time.perf_counter()
    model.fit(features.transform(train.images if train.kind == "image" else train.texts), y,
              epochs=1, batch_size=hp["batch_size"], verbose=0)
    fit_s = time.perf_counter() - t0
    raw_test: Any = test.images if test.kind == "image" else test.texts
    t0 = time.perf_counter()
    manifest = save_bundle(folder, model, features, {"label_names": classes})
    save_s = time.perf_counter() - t0
    log(f"{sample}/{template}: fit 1 epoch on {len(train)} rows {fit_s:.1f} s, "
        f"save_bundle (Keras + ONNX export + check) {save_s:.1f} s, runtimes {manifest['runtimes']}")
    del model
    keras.backend.clear_session()
    return {
        "raw": raw_test,
        "n": len(test),
        "onnx1": load_bundle(folder, runtime="onnx", intra_op_threads=1),
        "onnx2": load_bundle(folder, runtime="onnx", intra_op_threads=2),
        "keras": load_bundle(folder, runtime="keras"),
    }


def rows(raw: Any, start: int, count: int, n: int) -> Any:
    idx = [(start + i) % n for i in range(count)]
    if isinstance(raw, np.ndarray):
        return raw[idx]
    return [raw[i] for i in idx]


def variants(ctx: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    keras_bundle = ctx["keras"]
    model, transform = keras_bundle.runtime.model, keras_bundle.features.transform
    return {
        "onnx, 1 thread": ctx["onnx1"].predict_proba,
        "onnx, 2 threads": ctx["onnx2"].predict_proba,
        "keras runtime": keras_bundle.predict_proba,
        BASELINE: lambda raw: model.predict(transform(raw), verbose=0),
    }


def time_block(fn: Callable[[Any], Any], raw: Any, n: int, count: int, budget_s: float,
               min_calls: int, offset: int) -> float:
    """Median seconds per call of fn over ≥ min_calls calls and ≥ budget_s (different rows each call)."""
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while len(times) < min_calls or time.perf_counter() - start < budget_s:
        x = rows(raw, offset + i * count, count, n)
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        i += 1
    return statistics.median(times)


def measure(name: str, ctx: dict[str, Any], rounds: int, budget_s: float) -> dict[str, dict[str, float]]:
    fns = variants(ctx)
    raw, n = ctx["raw"], ctx["n"]
    for fn in fns.values():  # warm-up: graph tracing for both shapes, ORT arena allocation
        for count in (1, BATCH, 1, BATCH):
            fn(rows(raw, 0, count, n))
    single: dict[str, list[float]] = {k: [] for k in fns}
    batch: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            single[k].append(time_block(fns[k], raw, n, 1, budget_s, 5, r * 997))
            batch[k].append(time_block(fns[k], raw, n, BATCH, budget_s, 3, r * 997))
        log(f"{name} round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {single[k][-1] * 1e3:.2f} ms / {BATCH / batch[k][-1]:,.0f} rows/s" for k in names))
    return {k: {"single_ms": statistics.median(single[k]) * 1e3,
                "batch_rows_s": BATCH / statistics.median(batch[k])} for k in names}


def onnx_vs_keras(ctx: dict[str, Any]) -> float:
    x = rows(ctx["raw"], 0, min(DIFF_ROWS, ctx["n"]), ctx["n"])
    return float(np.max(np.abs(ctx["onnx1"].predict_proba(x) - ctx["keras"].predict_proba(x))))


def table(title: str, result: dict[str, dict[str, float]], diff: float, diff_rows: int) -> str:
    base = result[BASELINE]
    out = [title,
           f"  {'variant':<18}{'single ms/call':>15}{'speedup':>9}{'batch-64 rows/s':>17}{'speedup':>9}"]
    for k, v in result.items():
        out.append(f"  {k:<18}{v['single_ms']:>15.2f}{base['single_ms'] / v['single_ms']:>8.1f}x"
                   f"{v['batch_rows_s']:>17,.0f}{v['batch_rows_s'] / base['batch_rows_s']:>8.1f}x")
    out.append(f"  max |onnx - keras| probability over {diff_rows} test rows: {diff:.2e}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, --quick 2)")
    ap.add_argument("--quick", action="store_true",
                    help="train on a subset (1,000 images / 500 articles), 2 rounds, shorter blocks")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    budget = 0.15 if args.quick else 0.4
    t_start = time.perf_counter()

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx's np.object probe
    import keras  # noqa: F401  (imported up front so no timing includes it)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices from the warm-up's two batch shapes

    from loopml.models.bundle import load_bundle  # noqa: F401

    tables = []
    with tempfile.TemporaryDirectory(prefix="loopml-bench-inference-") as tmp:
        for sample, template, subset, unit in (("mnist", "cnn", 1000, "image"),
                                               ("bbc-news", "rnn", 500, "article")):
            ctx = prepare(sample, template, Path(tmp) / template, subset if args.quick else None)
            result = measure(f"{sample}/{template}", ctx, rounds, budget)
            diff_rows = min(DIFF_ROWS, ctx["n"])
            tables.append(table(f"seed {template.upper()} on {sample} (1 epoch), 1 {unit} per single call, "
                                f"median of {rounds} rounds; speedup vs {BASELINE}",
                                result, onnx_vs_keras(ctx), diff_rows))
    print("\n" + "\n\n".join(tables))
    print(f"\nonnxruntime {ort_version()}, keras {keras_version()}, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.1f}, total {time.perf_counter() - t_start:.0f} s")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def keras_version() -> str:
    import keras

    return keras.__version__


if __name__ == "__main__":
    main()
