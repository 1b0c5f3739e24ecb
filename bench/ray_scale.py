"""Training at scale: the local executor vs a 2-node Ray cluster on this machine, from one run.

Starts its own Ray cluster (ray.cluster_utils.Cluster: a head and a second node, real raylets, 1 CPU
each, in a temporary directory), a fresh PostgreSQL schema and a moto_server S3 bucket — the cluster
mode stores — and uses the SAME stores for the local executor, so only the executor differs. Each
mode runs as an in-process control loop, one mode after the other (never two loops on one store).

1. submit → first training batch of one job at a time (seed CNN on mnist, 1 epoch): local cold
   (LOOPML_WARM_WORKERS=0), local warm (a spare process), Ray cold (a fresh actor imports
   TensorFlow), Ray warm (a spare actor has imported it). Before a warm job the spare is ready.
2. N short jobs (default 8; seed CNN, 1 epoch, small) submitted at once: on the local executor with
   2 slots (one per core) and on the 2-node Ray cluster (1 CPU per job: 2 at once), both cold, so
   the difference is what Ray adds per job: actor scheduling, placement, the worker's start on a
   node, S3 / PostgreSQL being reached the same way by both.

Not a test: figures only. 2 cores cannot scale: two nodes on one 2-core machine share the same
cores, so the Ray figures show the overhead, not a speed-up. Other work on the machine stretches
wall times (the load average is printed).

    PYTHONPATH=src .venv/bin/python bench/ray_scale.py [--latency-jobs 3] [--jobs 8] [--postgres URL]
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = {"epochs": 1, "filters": 8, "dense_units": 64, "batch_size": 128}  # the short jobs of part 2
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}

from _common import free_port  # noqa: E402 - bench/_common.py


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).parent / "moto_server"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while True:
        try:
            opener.open(f"{url}/moto-api/", timeout=1)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"moto_server did not start: {log.read_text()[-500:]}") from None
            time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-jobs", type=int, default=3, help="jobs per mode for submit → first batch (median)")
    ap.add_argument("--jobs", type=int, default=8, help="short jobs submitted at once per executor")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--modes", default="local cold,local warm,ray cold,ray warm", help="a subset, comma-separated")
    ap.add_argument("--postgres", default=os.environ.get("LOOPML_TEST_POSTGRES_URL")
                    or f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-ray-"))
    (tmp / "ray").mkdir()
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    os.environ.update(RAY_ENV, RAY_TMPDIR=str(tmp), NO_PROXY=no_proxy, no_proxy=no_proxy, TF_CPP_MIN_LOG_LEVEL="2",
                      PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    sys.path.insert(0, SRC)

    import psycopg
    import ray

    moto, endpoint = start_moto(tmp / "moto.log")
    schema = f"loopml_bench_{uuid.uuid4().hex[:8]}"
    started: dict = {}  # the Ray cluster, once run_modes has made it
    try:
        run_modes(args, tmp, endpoint, schema, started)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if "cluster" in started:
            started["cluster"].shutdown()
        moto.terminate()
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        kill_leftovers(f"RAY_TMPDIR={tmp}".encode())
        shutil.rmtree(tmp, ignore_errors=True)


def kill_leftovers(marker: bytes) -> None:
    """Ray processes of this cluster that outlived it (they carry its RAY_TMPDIR)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), 9)
        except OSError:
            pass


def run_modes(args: argparse.Namespace, tmp: Path, endpoint: str, schema: str, started: dict) -> None:
    import boto3
    import psycopg
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    from loopml.controlplane import ControlLoop
    from loopml.core.settings import Settings
    from loopml.core.timeutil import parse_iso
    from loopml.datasets.service import register
    from loopml.platform import Platform
    from loopml.training.service import submit_training

    bucket = f"loopml-bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    db = f"{args.postgres}{'&' if '?' in args.postgres else '?'}options={quote(f'-csearch_path={schema}', safe='')}"

    ray_constants.ENABLE_RAY_CLUSTER = False
    common = {"node_ip_address": "127.0.0.1", "temp_dir": str(tmp), "object_store_memory": 80 * 2**20,
              "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={
        **common, "gcs_server_port": free_port(), "num_cpus": 1, "dashboard_agent_listen_port": free_port(),
        "dashboard_port": free_port()})
    started["cluster"] = cluster
    cluster.add_node(**common, num_cpus=1)
    cluster.wait_for_nodes()

    base = dict(database_url=db, artifact_uri=f"s3://{bucket}/loopml", s3_endpoint_url=endpoint, serving_port=0,
                reconcile_interval_s=0.2, heartbeat_timeout_s=600)

    def platform(mode: str, **over) -> Platform:
        return Platform(Settings(home=tmp / mode, **{**base, **over}))

    setup = platform("setup")
    register(setup, args.dataset, f"sample:{args.dataset}")
    setup.close()

    def seconds(a: str, b: str) -> float:
        return (parse_iso(b) - parse_iso(a)).total_seconds()

    def wait_spare(loop: ControlLoop, timeout: float = 300) -> None:
        ex = loop.executor
        t0 = time.monotonic()
        while True:
            pool = getattr(ex, "spares", None)
            ready = any(s.check_ready() for s in pool.spares) if pool is not None else \
                any(s.ready for s in ex._spares)
            if ready:
                return
            if time.monotonic() - t0 > timeout:
                raise SystemExit("the spare never got ready")
            time.sleep(0.05)

    def run(loop: ControlLoop, n: int, params: dict) -> list[dict]:
        jobs = [submit_training(loop.platform, dataset=args.dataset, model="cnn", params=params, register=False)
                for _ in range(n)]
        loop.wake()
        done = []
        for job in jobs:
            while (record := loop.platform.jobs.get(job["id"]))["status"] in ("queued", "running"):
                time.sleep(0.05)
            assert record["status"] == "succeeded", (record["id"], record["reason"])
            done.append(record)
        return done

    latency: dict[str, list[tuple[float, float]]] = {}
    batch: dict[str, tuple[float, list[dict]]] = {}
    modes = {"local cold": {"executor": "local", "warm_workers": 0, "max_concurrent_jobs": 2},
             "local warm": {"executor": "local", "warm_workers": 1, "max_concurrent_jobs": 2},
             "ray cold": {"executor": "ray", "warm_workers": 0, "ray_address": cluster.address},
             "ray warm": {"executor": "ray", "warm_workers": 1, "ray_address": cluster.address}}
    for mode, over in modes.items():
        if mode not in args.modes.split(","):
            continue
        loop = ControlLoop(platform(mode.replace(" ", "-"), **over))
        loop.start()
        try:
            latency[mode] = []
            for i in range(args.latency_jobs):
                if over["warm_workers"]:
                    wait_spare(loop)
                job = run(loop, 1, {"epochs": 1})[0]
                first = job["progress"]["first_batch_at"]
                row = (seconds(job["created_at"], first), seconds(job["created_at"], job["ended_at"]))
                latency[mode].append(row)
                print(f"{mode} job {i + 1}: submit→first batch {row[0]:.2f} s, submit→end {row[1]:.1f} s",
                      flush=True)
            if not over["warm_workers"] and args.jobs:
                t0 = time.monotonic()
                jobs = run(loop, args.jobs, SMALL)
                batch[mode.split()[0]] = (time.monotonic() - t0, jobs)
                print(f"{args.jobs} short jobs at once on {mode}: {batch[mode.split()[0]][0]:.1f} s", flush=True)
        finally:
            loop.stop()
            loop.platform.close()

    load = os.getloadavg()[0]
    print(f"\nsubmit → first batch, seed CNN on {args.dataset} (1 epoch), {args.latency_jobs} jobs per mode, "
          "one at a time, PostgreSQL + S3 (moto) stores; median (min–max):")
    for mode, rows in latency.items():
        firsts = [r[0] for r in rows]
        print(f"  {mode:<10} {statistics.median(firsts):6.2f} s  ({min(firsts):.2f}–{max(firsts):.2f})   "
              f"submit→end {statistics.median(r[1] for r in rows):.1f} s")
    if {"local", "ray"} <= set(batch):
        print(f"\n{args.jobs} short jobs (seed CNN {SMALL}) submitted at once, cold workers:")
        for name, (wall, jobs) in batch.items():
            first = statistics.median(seconds(j["started_at"], j["progress"]["first_batch_at"]) for j in jobs)
            run_s = statistics.median(seconds(j["started_at"], j["ended_at"]) for j in jobs)
            where = "2 slots on this host" if name == "local" else "2-node Ray cluster, 1 CPU per node and job"
            print(f"  {name:<6} wall {wall:6.1f} s  ({60 * args.jobs / wall:.1f} jobs/min; {where}); per job median: "
                  f"dispatch→first batch {first:.2f} s, dispatch→end {run_s:.1f} s")
        (lw, _), (rw, _) = batch["local"], batch["ray"]
        print(f"  Ray / local wall time {rw / lw:.2f}x; Ray adds {(rw - lw) / args.jobs:+.2f} s per job "
              f"(wall difference / {args.jobs})")
    print(f"(load average {load:.1f} on {os.cpu_count()} cores at the end; both Ray nodes share this machine's cores, "
          "so two nodes cannot train faster than two local slots: the Ray figures are its overhead, not a speed-up)")


if __name__ == "__main__":
    sys.exit(main())
