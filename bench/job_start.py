"""Submit → first training batch on the local executor, cold workers vs warm (spare) workers,
side by side in one run; then a sequence of short jobs queued at once, cold vs warm.

Two control planes run in this process, each with its own home: one with LOOPML_WARM_WORKERS=0
(every worker imports TensorFlow after dispatch), one with warm_workers=1 (a spare has imported
it already). Latency jobs alternate cold/warm, one at a time; before a warm job the spare is
ready (the steady state of jobs that arrive more than a spare's import apart). A job's first
batch is the wall time its training callback records (progress.first_batch_at); submit is the
job's created_at. Submission wakes the loop, as the API does. Not a test: figures only.

The worker's CPU seconds from dispatch to its first batch are load-independent (what an idle core
would take): the training callback records its process's CPU at the first batch
(progress.first_batch_cpu_s); a warm job subtracts what its spare had used before the job was
submitted (read from /proc while the spare waits idle), a cold worker starts from zero.

    .venv/bin/python bench/job_start.py [--jobs 5] [--sequence 20] [--dataset mnist] [--modes cold,warm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5, help="latency jobs per mode (median reported)")
    ap.add_argument("--sequence", type=int, default=20, help="short jobs queued at once per mode (0: skip)")
    ap.add_argument("--dataset", default="mnist", help="sample dataset of the latency jobs (seed CNN)")
    ap.add_argument("--sequence-dataset", default="digits", help="sample dataset of the short-job sequence")
    ap.add_argument("--modes", default="cold,warm", help="which of cold,warm to run (comma-separated)")
    args = ap.parse_args()
    modes = [m for m in ("cold", "warm") if m in args.modes.split(",")]
    if not modes:
        ap.error("--modes takes cold, warm or cold,warm")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from loopml.controlplane import ControlLoop
    from loopml.core.settings import Settings
    from loopml.core.timeutil import parse_iso
    from loopml.datasets.service import register
    from loopml.platform import Platform
    from loopml.training.service import submit_training

    root = Path(tempfile.mkdtemp(prefix="loopml-bench-start-"))
    loops = {}
    for mode, warm in (("cold", 0), ("warm", 1)):
        if mode not in modes:
            continue
        plat = Platform(Settings(home=root / mode, warm_workers=warm, max_concurrent_jobs=1, serving_port=0))
        for name in dict.fromkeys((args.dataset, args.sequence_dataset)):
            register(plat, name, f"sample:{name}")
        loops[mode] = ControlLoop(plat)
        loops[mode].start()

    def spare_ready(mode: str, timeout: float = 300) -> float:
        pool = loops[mode].executor.spares
        t0 = time.monotonic()
        while pool.count and not any(s.check_ready() for s in pool.spares):
            assert time.monotonic() - t0 < timeout, "spare never ready"
            time.sleep(0.05)
        return time.monotonic() - t0

    def run(mode: str, dataset: str, n: int = 1) -> list[dict]:
        """Submit ``n`` jobs at once and wait for them; each record gets ``cpu_to_first_batch``: the
        worker's CPU seconds from dispatch to its first batch, which unlike wall time does not
        depend on what else the machine runs (None when it cannot be told: a job whose spare was
        not idle before the submit)."""
        loop = loops[mode]
        idle = {s.proc.pid: _cpu_s(s.proc.pid) for s in loop.executor.spares.spares} if mode == "warm" else {}
        jobs = [submit_training(loop.platform, dataset=dataset, model="cnn", params={"epochs": 1}, register=False)
                for _ in range(n)]
        loop.wake()
        done = []
        for job in jobs:
            while True:
                record = loop.platform.jobs.get(job["id"])
                if record["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            assert record["status"] == "succeeded", record["reason"]
            at_first = (record["progress"] or {}).get("first_batch_cpu_s")
            pid = (record.get("worker") or {}).get("pid")
            before = 0.0 if mode == "cold" else idle.get(pid)
            record["cpu_to_first_batch"] = at_first - before if at_first is not None and before is not None else None
            done.append(record)
        return done

    def seconds(a: str, b: str) -> float:
        return (parse_iso(b) - parse_iso(a)).total_seconds()

    rows: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": []}
    try:
        if "warm" in modes:
            ready = spare_ready("warm")
            pid = loops["warm"].executor.spares.spares[0].proc.pid
            rss, cpu = _rss_mb(pid), _cpu_s(pid)
            print(f"first spare ready {ready:.1f} s after the control plane started; idle spare RSS "
                  f"{rss:.0f} MB, its imports and warm-up took {cpu:.2f} CPU s" if rss else "", flush=True)
        for i in range(args.jobs):
            for mode in modes:
                if mode == "warm":
                    spare_ready("warm")
                job = run(mode, args.dataset)[0]
                first = job["progress"]["first_batch_at"]
                cpu = job["cpu_to_first_batch"]
                rows[mode].append((seconds(job["created_at"], first), seconds(job["created_at"], job["started_at"]),
                                   seconds(job["started_at"], first), float("nan") if cpu is None else cpu))
                total, queued, started, cpu = rows[mode][-1]
                print(f"job {i + 1} {mode}: submit→first batch {total:5.2f} s  (submit→dispatch {queued:.2f}, "
                      f"dispatch→first batch {started:.2f}; worker CPU dispatch→first batch {cpu:.2f} s)", flush=True)
        sequence = {}
        if args.sequence:
            for mode in modes:
                spare_ready(mode)
                t0 = time.monotonic()
                jobs = run(mode, args.sequence_dataset, args.sequence)
                sequence[mode] = time.monotonic() - t0
                starts = [seconds(j["created_at"], j["progress"]["first_batch_at"]) -
                          seconds(j["created_at"], j["started_at"]) for j in jobs]
                print(f"{args.sequence} short jobs {mode}: {sequence[mode]:.1f} s "
                      f"(dispatch→first batch median {statistics.median(starts):.2f} s)", flush=True)
    finally:
        for loop in loops.values():
            loop.stop()

    print(f"\nsubmit → first batch, seed CNN on {args.dataset}, {args.jobs} jobs each, median (min–max):")
    for mode in modes:
        total = [r[0] for r in rows[mode]]
        print(f"  {mode:4}  {statistics.median(total):5.2f} s  ({min(total):.2f}–{max(total):.2f})   "
              f"submit→dispatch {statistics.median(r[1] for r in rows[mode]):.2f} s, "
              f"dispatch→first batch {statistics.median(r[2] for r in rows[mode]):.2f} s, "
              f"worker CPU in it {statistics.median(r[3] for r in rows[mode]):.2f} s")
    if len(sequence) == 2:
        print(f"{args.sequence} short jobs ({args.sequence_dataset}, 1 epoch, queued at once, 1 slot): "
              f"cold {sequence['cold']:.1f} s, warm {sequence['warm']:.1f} s "
              f"({sequence['cold'] / sequence['warm']:.2f}x)")
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} cores at the end: other work on the machine stretches wall "
          "times; the worker's CPU seconds are what an idle core would take)")


if __name__ == "__main__":
    sys.exit(main())
