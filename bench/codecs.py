"""Real-time codec speed: how to turn a 28×28 image body into float32, and encoding cost.

Decode options, side by side in one run, for 1 and 32 MNIST-sized images (integer pixels
0–255, as clients send them), µs per body:

    orjson+asarray.astype   orjson.loads, np.asarray(x) (dtype discovered), .astype(float32)
    orjson+asarray(f32)     orjson.loads, np.asarray(x, dtype=float32)
    orjson+array(f32)       orjson.loads, np.array(x, dtype=float32)
    json+asarray.astype     stdlib json.loads, then as the first
    decode() json|npy|csv   loopml.serving.codecs.decode end to end (checks included)

and ``encode_predictions`` for 1 and 32 rows × 10 classes. Each figure: the median over
``--repeat`` rounds of the mean over ``--number`` calls; options interleaved per round.
(orjson's OPT_SERIALIZE_NUMPY applies to dumps only — nothing to compare on decode.)

``--layouts [REV]`` instead times ``decode()`` per JSON layout of the same pixels (28×28,
28×28×1, flat 784; integers 0–255 or floats x/255; orjson's compact or ``json.dumps``' spaced
separators; 1 and 32 images), this tree's codec side by side with the one at git revision REV
(default HEAD), loaded from ``git show`` into the same process: one run, interleaved rounds,
best of ``--repeat`` (on a shared machine the minimum is the least noisy figure).

    .venv/bin/python bench/codecs.py [--repeat 15] [--number 50] [--layouts [REV]]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from loopml.serving.codecs import decode, encode_predictions


def _time(fn: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def _codec_at(rev: str) -> Any:
    """loopml.serving.codecs as it was at git revision ``rev`` (imported under another name)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:src/loopml/serving/codecs.py"], cwd=root,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="loopml-codec-")) / "codecs_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("codecs_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["codecs_baseline"] = module
    spec.loader.exec_module(module)
    return module


def layouts(rev: str, repeat: int, number: int) -> None:
    old = _codec_at(rev)
    rng = np.random.default_rng(0)
    forms = {"28×28": (28, 28), "28×28×1": (28, 28, 1), "flat 784": (784,)}
    cases: dict[tuple[str, int], bytes] = {}
    for rows in (1, 32):
        pixels = rng.integers(0, 256, (rows, 28, 28, 1))
        for name, dims in forms.items():
            ints = pixels.reshape(rows, *dims)
            cases[f"{name} ints", rows] = orjson.dumps({"instances": ints.tolist()})
            cases[f"{name} floats", rows] = orjson.dumps({"instances": (ints / 255).tolist()})
        cases["28×28×1 ints, spaced", rows] = json.dumps({"instances": pixels.tolist()}).encode()
        cases["28×28×1 ints, bare", rows] = orjson.dumps(pixels.tolist())
    codecs = {"old": old.decode, "new": decode}
    timings: dict[tuple[str, int, str], list[float]] = {}
    for (case, rows), body in cases.items():
        want = decode(body, "application/json", "image", shape=[28, 28, 1])[0]
        for who, fn in codecs.items():  # same pixels, same array, both codecs
            got = fn(body, "application/json", "image", shape=[28, 28, 1])[0]
            np.testing.assert_array_equal(got.reshape(rows, -1), want.reshape(rows, -1))
    for _ in range(repeat):
        for (case, rows), body in cases.items():
            for who, fn in codecs.items():
                timings.setdefault((case, rows, who), []).append(_time(
                    lambda: fn(body, "application/json", "image", shape=[28, 28, 1]), number))
    print(f"decode() µs per JSON body, best of {repeat} interleaved rounds × {number} calls "
          f"(the machine is shared: the minimum is the least noisy); old = {rev}")
    print(f"{'layout':<24}{'bytes/img':>10}{'1 img old':>11}{'new':>8}{'32 img old':>12}"
          f"{'new':>8}")
    for case in dict.fromkeys(c for c, _ in cases):
        med = {(rows, who): min(timings[case, rows, who])
               for rows in (1, 32) for who in codecs}
        print(f"{case:<24}{len(cases[case, 1]):>10,}{med[1, 'old']:>11.1f}{med[1, 'new']:>8.1f}"
              f"{med[32, 'old']:>12.1f}{med[32, 'new']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=50)
    parser.add_argument("--layouts", nargs="?", const="HEAD", default=None, metavar="REV")
    args = parser.parse_args()
    if args.layouts:
        layouts(args.layouts, args.repeat, args.number)
        return
    rng = np.random.default_rng(0)

    decoders: dict[str, Callable[[bytes, bytes, bytes], Callable[[], Any]]] = {
        "orjson+asarray.astype": lambda b, n, c: lambda: np.asarray(
            orjson.loads(b)["instances"]).astype(np.float32),
        "orjson+asarray(f32)": lambda b, n, c: lambda: np.asarray(
            orjson.loads(b)["instances"], dtype=np.float32),
        "orjson+array(f32)": lambda b, n, c: lambda: np.array(
            orjson.loads(b)["instances"], dtype=np.float32),
        "json+asarray.astype": lambda b, n, c: lambda: np.asarray(
            json.loads(b)["instances"]).astype(np.float32),
        "decode() json": lambda b, n, c: lambda: decode(b, "application/json", "image",
                                                        shape=[28, 28, 1]),
        "decode() npy": lambda b, n, c: lambda: decode(n, "application/x-npy", "image",
                                                       shape=[28, 28, 1]),
        "decode() csv": lambda b, n, c: lambda: decode(c, "text/csv", "image",
                                                       shape=[28, 28, 1]),
    }
    results: dict[str, dict[int, list[float]]] = {k: {1: [], 32: []} for k in decoders}
    fns: dict[tuple[str, int], Callable[[], Any]] = {}
    for rows in (1, 32):
        pixels = rng.integers(0, 256, (rows, 28, 28))
        body = orjson.dumps({"instances": pixels.tolist()})
        buf = io.BytesIO()
        np.save(buf, pixels.astype(np.uint8))
        csv_body = "\n".join(",".join(map(str, r)) for r in pixels.reshape(rows, -1)).encode()
        for name, make in decoders.items():
            fns[name, rows] = make(body, buf.getvalue(), csv_body)
            fns[name, rows]()  # warm up, and fail early
        print(f"{rows} image(s): JSON {len(body):,} B, npy {len(buf.getvalue()):,} B, "
              f"CSV {len(csv_body):,} B")

    labels = [str(i) for i in range(10)]
    probas = {n: rng.dirichlet(np.ones(10), size=n).astype(np.float32) for n in (1, 32)}
    enc: dict[int, list[float]] = {1: [], 32: []}
    for _ in range(args.repeat):
        for (name, rows), fn in fns.items():
            results[name][rows].append(_time(fn, args.number))
        for n, proba in probas.items():
            enc[n].append(_time(lambda: encode_predictions(proba, labels), args.number))

    print(f"\n{'decode, µs per body (median)':<30}{'1 image':>10}{'32 images':>12}")
    for name, by_rows in results.items():
        print(f"{name:<30}{statistics.median(by_rows[1]):>10.1f}"
              f"{statistics.median(by_rows[32]):>12.1f}")
    print(f"\n{'encode_predictions, 10 classes':<30}{'1 row':>10}{'32 rows':>12}")
    print(f"{'µs per call (median)':<30}{statistics.median(enc[1]):>10.1f}"
          f"{statistics.median(enc[32]):>12.1f}")


if __name__ == "__main__":
    main()
