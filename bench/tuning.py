"""A tuning job of N short trials per strategy, the same budget each: trials per minute and the best
objective reached. Not a test: figures only.

Every strategy searches the same space on the same dataset with the same budget (max trials,
parallel trials, epochs per trial), on the local executor, one strategy after the other. Printed per
strategy: wall time, trials/minute, trials pruned, the best validation accuracy and the best trial's
test accuracy (the model that would be registered).

    .venv/bin/python bench/tuning.py [--dataset digits] [--trials 20] [--parallel 2] [--epochs 3]
                                     [--strategies hyperband,random,bayesian]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

SPACE = ["learning_rate=loguniform(1e-4,3e-2)", "filters=choice(8,16,32)", "dropout=uniform(0,0.5)"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits", help="a sample: digits (fast) or mnist")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--strategies", default="hyperband,random")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from loopml.controlplane import ControlLoop
    from loopml.core.jobstatus import TUNING_ACTIVE
    from loopml.core.settings import Settings
    from loopml.datasets.service import register
    from loopml.platform import Platform
    from loopml.tuning.service import create_tuning, get_tuning

    rows = []
    with tempfile.TemporaryDirectory(prefix="loopml-bench-tuning-") as home:
        plat = Platform(Settings(home=home, reconcile_interval_s=0.2, max_concurrent_jobs=args.parallel,
                                 serving_port=0))
        register(plat, args.dataset, f"sample:{args.dataset}")
        loop = ControlLoop(plat)
        loop.start()
        try:
            for strategy in args.strategies.split(","):
                name = f"bench-{strategy}"
                t0 = time.monotonic()
                create_tuning(plat, name=name, dataset=args.dataset, model="cnn", space=SPACE, strategy=strategy,
                              max_trials=args.trials, parallel=args.parallel, params={"epochs": args.epochs})
                loop.wake()
                while (record := get_tuning(plat, name))["status"] in TUNING_ACTIVE:
                    time.sleep(0.5)
                wall = time.monotonic() - t0
                best = (record["result"] or {}).get("best") or {}
                test_acc = None
                if best:
                    test_acc = (plat.jobs.get(best["job_id"])["result"] or {}).get("metrics", {}).get("test_accuracy")
                counts = record["counts"]
                rows.append((strategy, record["status"], len(record["trials"]), counts.get("pruned", 0), wall,
                             60 * len(record["trials"]) / wall, best.get("value"), test_acc))
                print(f"{strategy}: done in {wall:.0f} s", flush=True)
        finally:
            loop.stop()
            plat.close()

    print(f"\n{args.dataset}, seed CNN, {args.trials} trials, {args.parallel} at once, {args.epochs} epochs each, "
          f"space {' '.join(SPACE)}")
    print(f"{'strategy':<10} {'status':<10} {'trials':>6} {'pruned':>6} {'wall s':>7} {'trials/min':>10} "
          f"{'best val_acc':>12} {'its test_acc':>12}")
    for strategy, status, n, pruned, wall, per_min, val, test in rows:
        print(f"{strategy:<10} {status:<10} {n:>6} {pruned:>6} {wall:>7.0f} {per_min:>10.1f} "
              f"{val if val is not None else float('nan'):>12.4f} {test if test is not None else float('nan'):>12.4f}")


if __name__ == "__main__":
    main()
