"""Serving workers (issue 14 point 1): LoopML with 1 vs N serving processes on one socket, one run.

    .venv/bin/python bench/serving_workers.py [--workers 1,2] [--concurrency 32,128]
                                              [--duration 10] [--rounds 2] [--workdir DIR]

The same model and request as bench/serving.py's JSON row (the seed CNN trained on the mnist
sample, one 28×28 image per request, ``{"instances": ...}`` body): one `loopml server` per
worker count (``LOOPML_SERVING_WORKERS``), all up at once, each in its own LOOPML_HOME, the same
bundle registered and endpoint ``mnist`` created with the SDK. wrk (one thread, closed loop,
``--latency``) then runs every (worker count, concurrency) cell in ``--rounds`` interleaved
rounds — round 1: 1 worker c=32, 2 workers c=32, 1 worker c=128, …, then again — so the shared
machine's drift hits every configuration alike; the medians are reported, with the load average
before and after. Each server is first checked to answer the right label, warmed up at c=32
until every worker has answered (new connections spread over the workers), and its errors
(non-2xx + socket errors) are counted. "server cores used" is the CPU time of the `loopml server`
process tree (control plane + workers) per wall second of the cell, "CPU ms/req" the same per
request: whether the second worker got a second core at all on the shared machine.

Honest caveat: on this 2-core machine wrk, the control planes and the serving workers share the
cores; with one worker the server gets at most one core for Python (ONNX Runtime runs one
intra-op thread per batch), two workers may use both — minus what wrk needs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving as bench  # noqa: E402 - bench/serving.py: model, launcher, wrk helpers
from _common import workdir as make_workdir  # noqa: E402 - bench/_common.py


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="worker counts to compare (first = baseline)")
    p.add_argument("--concurrency", default="32,128")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk cell")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="keep the model/homes here (reused)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get update && apt-get install -y wrk")
    workers = [int(w) for w in args.workers.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    tmp, workdir = make_workdir(args.workdir, "loopml-bench-workers-")
    servers: dict[int, bench.Server] = {}
    try:
        model = bench.prepare_model(workdir, args.epochs)
        json_body, _, _ = bench.write_bodies(model, workdir)
        for n in workers:
            servers[n] = bench.launch_loopml(model, workdir, name=f"loopml-{n}w",
                                             extra_env={"LOOPML_SERVING_WORKERS": str(n)})
        for n, server in servers.items():
            bench.wait_ready(server, json_body)
            bench.check_answer(server, json_body, model)
            warm(server, json_body, n)
        load_before = os.getloadavg()
        cells: dict[tuple[int, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for c in concurrencies:
                for n in workers:
                    pid = servers[n].proc.pid  # the control plane: its tree has the workers
                    t0, cpu0 = time.perf_counter(), bench.cpu_seconds(pid)
                    res = bench.run_wrk(servers[n], json_body, c, args.duration)
                    cpu = bench.cpu_seconds(pid) - cpu0
                    res["cores"] = cpu / (time.perf_counter() - t0)
                    res["cpu_ms"] = 1e3 * cpu / max(1, res["requests"])
                    cells.setdefault((n, c), []).append(res)
                    bench.log(f"round {r + 1}: {n} worker(s) c={c}: {res['rps']:.0f} req/s, "
                              f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                              f"errors {res['errors']}, server {res['cores']:.2f} cores, "
                              f"{res['cpu_ms']:.2f} CPU ms/req")
        load_after = os.getloadavg()
        report(cells, workers, concurrencies, args, load_before, load_after)
    finally:
        for server in servers.values():
            bench.stop(server)
        if tmp is not None:
            tmp.cleanup()


def warm(server: bench.Server, body: bench.Body, n: int) -> None:
    """Warm-up runs at c=32 until at least WARMUP_REQUESTS per worker were answered."""
    t0 = time.perf_counter()
    done = 0
    while done < bench.WARMUP_REQUESTS * n and time.perf_counter() - t0 < bench.WARMUP_MAX_S:
        done += int(bench.run_wrk(server, body, 32, 2)["requests"])
    bench.log(f"{server.name}: warmed up with {done} requests")


def report(cells, workers, concurrencies, args, load_before, load_after) -> None:
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p50_ms", "p99_ms", "cores", "cpu_ms")}
           for k, v in cells.items()}
    errors = {k: sum(int(r["errors"]) for r in v) for k, v in cells.items()}
    base = workers[0]
    print(f"\nLoopML serving workers — wrk -t1 -d{args.duration:.0f}s --latency, JSON body, "
          f"{args.rounds} interleaved round(s), medians; cores {os.cpu_count()}, load average "
          f"(1 min) {load_before[0]:.1f} before / {load_after[0]:.1f} after\n")
    print(f"| workers | concurrency | req/s | vs {base} worker | p50 ms | p99 ms | errors | "
          "server cores used | server CPU ms/req |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in concurrencies:
        for n in workers:
            m = med[(n, c)]
            ratio = m["rps"] / med[(base, c)]["rps"]
            print(f"| {n} | {c} | {m['rps']:.0f} | {ratio:.2f}× | {m['p50_ms']:.1f} | "
                  f"{m['p99_ms']:.1f} | {errors[(n, c)]} | {m['cores']:.2f} | {m['cpu_ms']:.2f} |")
    if len(workers) > 1 and 128 in concurrencies:
        ratio = med[(workers[1], 128)]["rps"] / med[(base, 128)]["rps"]
        print(f"\ngoal: {workers[1]} workers ≥ 1.3× {base} worker at c=128 — measured {ratio:.2f}× "
              f"({'met' if ratio >= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
