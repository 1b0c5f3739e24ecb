"""Training overhead of LoopML vs a plain Keras `fit`, side by side in one run.

Trains the seed CNN on `mnist` (same split, same hyperparameters, same features) through a
LoopML job and through a plain script in a fresh process, interleaved ROUNDS times, and prints
samples/s of both (whole `fit` wall time, checkpoints and progress reporting included for
LoopML) with their ratio, plus submit-to-first-batch latency. Not a test: figures only.

    .venv/bin/python bench/training.py [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = r'''
import json, os, sys, time
import numpy as np
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.datasets.service import load_version
from loopml.models.features import fit_features
from loopml.models.hparams import validate_hparams
from loopml.models.templates import build_model
import keras
home, epochs = sys.argv[1], int(sys.argv[2])
p = Platform(Settings(home=home))
ds = p.datasets.get("mnist")
content, splits = load_version(p, ds)
classes = ds["schema"]["classes"]; idx = {c: i for i, c in enumerate(classes)}
y = np.array([idx[str(c)] for c in content.labels])
train, val = content.take(splits["train"]), content.take(splits["validation"])
hp = validate_hparams("cnn", {"epochs": epochs})
keras.utils.set_random_seed(hp["seed"])
feats = fit_features(train, hp, ds["schema"])
model = build_model("cnn", hp, ds["schema"], feats)
xt, xv = feats.transform(train.images), feats.transform(val.images)
t0 = time.monotonic()
model.fit(xt, y[splits["train"]], validation_data=(xv, y[splits["validation"]]), epochs=epochs,
          batch_size=hp["batch_size"], verbose=0)
print(json.dumps({"samples_per_s": len(xt) * epochs / (time.monotonic() - t0)}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from loopml.controlplane import ControlLoop
    from loopml.core.settings import Settings
    from loopml.datasets.service import register
    from loopml.platform import Platform
    from loopml.training.service import submit_training

    home = Path(tempfile.mkdtemp(prefix="loopml-bench-"))
    # cold workers: a spare's replacement importing TensorFlow during the fit would skew samples/s
    # (bench/job_start.py measures warm starts)
    platform = Platform(Settings(home=home, reconcile_interval_s=0.05, warm_workers=0))
    register(platform, "mnist", "sample:mnist")
    loop = ControlLoop(platform)
    loop.start()
    plain, loopml, latency = [], [], []
    try:
        for r in range(args.rounds):
            out = subprocess.run([sys.executable, "-c", PLAIN, str(home), str(args.epochs)], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            plain.append(json.loads(out)["samples_per_s"])

            t0 = time.monotonic()
            job = submit_training(platform, dataset="mnist", model="cnn", params={"epochs": args.epochs})
            first = None
            while True:
                j = platform.jobs.get(job["id"])
                if first is None and (j["progress"] or {}).get("batch", 0) >= 1:
                    first = time.monotonic() - t0
                if j["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            assert j["status"] == "succeeded", j["reason"]
            loopml.append(j["result"]["metrics"]["train_samples_per_s"])
            latency.append(first)
            print(f"round {r + 1}: plain keras {plain[-1]:,.0f} samples/s | loopml job {loopml[-1]:,.0f} samples/s "
                  f"| submit-to-first-batch {first:.2f} s", flush=True)
    finally:
        loop.stop()
    p, l = statistics.median(plain), statistics.median(loopml)
    print(f"\nseed CNN on mnist, {args.epochs} epochs x {args.rounds} interleaved rounds (median):")
    print(f"  plain Keras fit   {p:,.0f} samples/s")
    print(f"  LoopML job        {l:,.0f} samples/s")
    print(f"  ratio LoopML/plain {l / p:.3f}   (goal >= 0.95)")
    print(f"  submit-to-first-batch {statistics.median(latency):.2f} s (worker spawn, TF import, data load, build, first step)")


if __name__ == "__main__":
    main()
