"""Monitoring (issue 5), one run, figures only (not a test).

    .venv/bin/python bench/monitoring.py [--records 1000000] [--windows 20] [--workdir DIR]
    .venv/bin/python bench/monitoring.py --power [--quick] [--resamples 20] ...   # issue 12's power study

``--power`` runs bench/drift_power.py instead (its docstring says how): false-alarm and detection
rates per shift and window size, LoopML vs Evidently's defaults side by side, the accuracy
estimate on shifted digits, one verdict on 1M rows. The rest of this docstring is the default run.

Everything runs on real models: a fresh LoopML home registers the ``mnist`` and ``penguins``
samples and trains the seed CNN (2 epochs) and the MLP through real training jobs (control loop
+ worker), so each version gets the baseline registration writes (training-split profile, and
penultimate-layer embeddings for the CNN). Predictions come from the registered bundles (ONNX).
Then, at the default thresholds (``drift.DEFAULT_THRESHOLDS``):

  false alarms   ≥ 20 windows of unshifted rows the model never trained on → ``compare()`` →
                 windows with any violation. Goal ≤ 1 in 20.
                 mnist: registration profiles the held-out rows (validation + test, 1,000), so
                 traffic must come from elsewhere: 20 random re-splits of those rows, baseline
                 of 500 (profile + embeddings) vs a disjoint 200-row window; plus, for
                 information, one fixed split (the detection baseline, built by
                 ``compute_baseline`` like registration) vs 200-row bootstrap windows of the
                 other 500 rows (every window shares that one pool's deviation).
                 penguins (344 rows): 20 random re-splits, baseline of one half profiled with the
                 model, window = the other half (172 rows, so min_samples is lowered to 150);
                 plus, for information, the registration baseline vs bootstrap windows of the 69
                 held-out rows (pessimistic: every window repeats the same few distinct rows).
  detection      shifted requests (one row each) streamed after the shift; every 50 requests
                 ``compare()`` runs on the accumulated post-shift rows (min_samples 200 applies)
                 → requests until the first violation, for a strong and milder shifts and an
                 unshifted control (same baselines and traffic pools as above; penguins traffic
                 is drawn from 172 distinct rows, so long streams repeat rows).
  throughput     ``--records`` captured records of a penguins endpoint, written directly in the
                 capture format and layout (``{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl``,
                 real request/response bodies), then ONE real monitor run (monitoring/run.py: read,
                 decode, profile, drift, quality, report JSON + HTML, alerts) in a fresh child
                 process: wall time and peak RSS (VmHWM of that process). Goal < 60 s, < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _common import log, proc_status_bytes as vm_kib  # noqa: E402 - bench/_common.py

ENDPOINT = "penguins"
MONITOR = "penguins-bench"
GIB = 1 << 30


# -- models: trained and registered for real ----------------------------------------------------

def train_models(platform: Any) -> dict[str, dict[str, Any]]:
    """Register the samples, train through jobs; → {dataset: model version record}."""
    from loopml.controlplane import ControlLoop
    from loopml.datasets.service import register
    from loopml.training.service import submit_training

    jobs = {}
    for name in ("mnist", "penguins"):
        register(platform, name, f"sample:{name}")
    loop = ControlLoop(platform)
    loop.start()
    try:
        for name, template, params in (("mnist", "cnn", {"epochs": 2}), ("penguins", "mlp", {"epochs": 50})):
            t0 = time.monotonic()
            job = submit_training(platform, dataset=name, model=template, params=params)
            while True:
                j = platform.jobs.get(job["id"])
                if j["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            if j["status"] != "succeeded":
                raise RuntimeError(f"training {name} {j['status']}: {j.get('reason')}")
            jobs[name] = j
            log(f"  trained {template} on {name} in {time.monotonic() - t0:.1f} s (job {j['id']}, "
                f"model {j['result'].get('model_ref')}, baseline {j['result'].get('baseline')})")
    finally:
        loop.stop()
    return {name: model_of(platform, j["result"]["model_ref"]) for name, j in jobs.items()}


def model_of(platform: Any, ref: str) -> dict[str, Any]:
    name, _, version = ref.partition(":")
    return platform.models.get(name, int(version) if version else None)


class Model:
    """A registered version loaded for in-process prediction, with its baseline."""

    def __init__(self, platform: Any, record: dict[str, Any], folder: Path) -> None:
        from loopml.models.bundle import load_bundle
        from loopml.monitoring.baseline_job import load_baseline

        self.record = record
        self.folder = Path(platform.artifacts.download_dir(record["artifact_prefix"], str(folder)))
        self.bundle = load_bundle(self.folder, runtime="onnx")
        self.baseline, self.baseline_embeddings = load_baseline(platform, record)
        self._registered = self.baseline
        self.class_names = [str(c) for c in self.bundle.label_names]
        self.schema = self.baseline["schema"]

    @property
    def registered_source(self) -> str:
        src = self._registered.get("source") or {}
        return f"{self._registered['rows']} rows of {src.get('dataset', '?')} {src.get('split', '?')}"

    def use_baseline(self, raw: Any) -> None:
        """Profile ``raw`` as registration does (compute_baseline) and use it as the baseline."""
        from loopml.monitoring.baseline_job import compute_baseline

        self.baseline, self.baseline_embeddings = compute_baseline(
            kind=self.record["kind"], raw=raw, schema=self.schema, class_names=self.class_names,
            predict_proba=self.proba, embed_rows=self.embed)

    def proba(self, raw: Any):
        return self.bundle.predict_proba(raw)

    def embed(self, raw: Any):
        from loopml.models.embeddings import embed

        return embed(self.folder, raw, max_rows=len(raw))  # all rows, in order

    def profile(self, raw: Any, proba: Any, reference: dict | None) -> dict:
        from loopml.monitoring.profile import build_profile

        return build_profile(kind=self.record["kind"], raw=raw, proba=proba, class_names=self.class_names,
                             schema=self.schema, reference=reference)


def violated(result: dict) -> list[str]:
    return [v["name"] for v in result["violations"]]


# -- 1. false alarms ----------------------------------------------------------------------------

def mnist_false_alarms_resplit(m: Model, images: Any, proba: Any, emb: Any, windows: int, rows: int) -> dict:
    """Independent draws: each window re-splits the held-out rows into a baseline half and a
    disjoint ``rows``-row window (no row repeated, none shared with the baseline)."""
    import numpy as np

    from loopml.monitoring.drift import compare

    alarms = []
    half = len(images) // 2
    for w in range(windows):
        order = np.random.default_rng(9000 + w).permutation(len(images))
        b, c = order[:half], order[half:half + rows]
        base = m.profile(images[b], proba[b], None)
        current = m.profile(images[c], proba[c], base)
        result = compare(base, current, baseline_embeddings=emb[b], current_embeddings=emb[c], seed=w)
        if result["violations"]:
            alarms.append((w, violated(result)))
    return {"windows": windows, "alarms": alarms, "checks": len(result["features"]), "baseline": half}


def mnist_false_alarms(m: Model, pool: Any, pool_proba: Any, pool_emb: Any, windows: int, rows: int) -> dict:
    import numpy as np

    from loopml.monitoring.drift import compare

    alarms = []
    for w in range(windows):
        idx = np.random.default_rng(1000 + w).choice(len(pool), size=rows, replace=True)
        current = m.profile(pool[idx], pool_proba[idx], m.baseline)
        result = compare(m.baseline, current, baseline_embeddings=m.baseline_embeddings,
                         current_embeddings=pool_emb[idx], seed=w)
        if result["violations"]:
            alarms.append((w, violated(result)))
    return {"windows": windows, "alarms": alarms, "checks": len(result["features"])}


def penguins_false_alarms_resplit(m: Model, frame: Any, proba: Any, windows: int) -> dict:
    import numpy as np

    from loopml.monitoring.drift import compare

    alarms = []
    half = len(frame) // 2
    for w in range(windows):
        order = np.random.default_rng(2000 + w).permutation(len(frame))
        b, c = order[:half], order[half:]
        base = m.profile(frame.iloc[b].reset_index(drop=True), proba[b], None)
        current = m.profile(frame.iloc[c].reset_index(drop=True), proba[c], base)
        result = compare(base, current, thresholds={"min_samples": 150}, seed=w)
        if result["violations"]:
            alarms.append((w, violated(result)))
    return {"windows": windows, "alarms": alarms, "checks": len(result["features"]), "rows": len(frame) - half}


def penguins_false_alarms_bootstrap(m: Model, pool: Any, pool_proba: Any, windows: int, rows: int) -> dict:
    import numpy as np

    from loopml.monitoring.drift import compare

    alarms = []
    for w in range(windows):
        idx = np.random.default_rng(3000 + w).choice(len(pool), size=rows, replace=True)
        current = m.profile(pool.iloc[idx].reset_index(drop=True), pool_proba[idx], m.baseline)
        result = compare(m.baseline, current, seed=w)
        if result["violations"]:
            alarms.append((w, violated(result)))
    return {"windows": windows, "alarms": alarms, "distinct": len(pool)}


# -- 2. detection delay -------------------------------------------------------------------------

def first_alarm(total: int, step: int, judge: Callable[[int], dict]) -> tuple[int | None, list[str]]:
    """Requests after the shift until compare() on the accumulated rows first reports a violation."""
    for n in range(step, total + 1, step):
        result = judge(n)
        if result["violations"]:
            return n, violated(result)
    return None, []


def mnist_detection(m: Model, pool: Any, pool_proba: Any, pool_emb: Any, inv_proba: Any, inv_emb: Any,
                    total: int, step: int) -> list[tuple[str, int | None, list[str]]]:
    import numpy as np

    from loopml.monitoring.drift import compare

    inverted = 255 - pool
    out = []
    for label, fraction in (("unshifted (control)", 0.0), ("100 % inverted", 1.0), ("30 % inverted", 0.3),
                            ("10 % inverted", 0.1)):
        rng = np.random.default_rng(4000)
        idx = rng.choice(len(pool), size=total, replace=True)
        flip = rng.random(total) < fraction
        raw = np.where(flip[:, None, None, None], inverted[idx], pool[idx])
        proba = np.where(flip[:, None], inv_proba[idx], pool_proba[idx])
        emb = np.where(flip[:, None], inv_emb[idx], pool_emb[idx])

        def judge(n: int) -> dict:
            current = m.profile(raw[:n], proba[:n], m.baseline)
            return compare(m.baseline, current, baseline_embeddings=m.baseline_embeddings,
                           current_embeddings=emb[:n])

        out.append((label, *first_alarm(total, step, judge)))
    return out


def penguins_detection(m: Model, frame: Any, proba_all: Any, total: int, step: int
                       ) -> list[tuple[str, int | None, list[str]]]:
    import numpy as np

    from loopml.monitoring.drift import compare

    order = np.random.default_rng(5000).permutation(len(frame))
    half = len(frame) // 2
    b, pool = order[:half], order[half:]
    base = m.profile(frame.iloc[b].reset_index(drop=True), proba_all[b], None)
    sd = float(base["features"]["body_mass_g"]["std"])

    def heavier(k: float) -> Callable[[Any, Any], Any]:
        def shift(f: Any, rng: Any) -> Any:
            f["body_mass_g"] = f["body_mass_g"] + k * sd
            return f
        return shift

    def island_mix(f: Any, rng: Any) -> Any:  # half of the requests now come from Torgersen
        f.loc[rng.random(len(f)) < 0.5, "island"] = "Torgersen"
        return f

    out = []
    for label, shift in (("unshifted (control)", None), (f"body_mass_g +1 sd (+{sd:.0f} g)", heavier(1.0)),
                         (f"body_mass_g +0.5 sd (+{sd / 2:.0f} g)", heavier(0.5)),
                         ("island mix: 50 % Torgersen", island_mix)):
        rng = np.random.default_rng(6000)
        rows = frame.iloc[rng.choice(pool, size=total, replace=True)].reset_index(drop=True)
        if shift is not None:
            rows = shift(rows.copy(), rng)
        proba = m.proba(rows)  # the model answers the shifted rows

        def judge(n: int) -> dict:
            current = m.profile(rows.iloc[:n], proba[:n], base)
            return compare(base, current)

        out.append((label, *first_alarm(total, step, judge)))
    return out


# -- 3. throughput of one real monitor run ------------------------------------------------------

def write_capture(platform: Any, m: Model, frame: Any, endpoint: str, records: int, files: int, end: datetime,
                  span: timedelta) -> dict[str, Any]:
    """``records`` captured requests (one penguin each) spread evenly over (end - span, end]."""
    import numpy as np
    import orjson

    from loopml.serving.codecs import encode_predictions

    proba = m.proba(frame)
    inputs = []
    for row in frame.to_dict(orient="records"):
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        inputs.append(orjson.dumps({"instances": [clean]}).decode())
    outputs = [encode_predictions(proba[i:i + 1], m.class_names).decode() for i in range(len(frame))]
    version = int(m.record["version"])
    prefix = platform.settings.capture_prefix
    per_file = -(-records // files)
    start = end - span
    step_s = span.total_seconds() / records
    which = np.random.default_rng(7).integers(0, len(frame), size=records)
    written = bytes_total = 0
    t0 = time.monotonic()
    for first in range(0, records, per_file):
        groups: dict[str, list[bytes]] = {}
        names: dict[str, str] = {}
        for i in range(first, min(first + per_file, records)):
            t = start + timedelta(seconds=(i + 1) * step_s)
            hour = t.strftime("%Y/%m/%d/%H")
            if hour not in groups:
                groups[hour] = []
                names[hour] = f"{t.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
            r = int(which[i])
            groups[hour].append(orjson.dumps({
                "captureData": {
                    "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                      "data": inputs[r], "encoding": "JSON"},
                    "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                       "data": outputs[r], "encoding": "JSON"}},
                "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  "inferenceId": f"req-{i}", "endpoint": endpoint, "variant": "primary",
                                  "model": m.record["name"], "modelVersion": version, "latencyMs": 1.2},
                "eventVersion": "0"}))
        for hour, lines in groups.items():
            data = b"\n".join(lines) + b"\n"
            platform.artifacts.put_bytes(f"{prefix}/{endpoint}/primary/{hour}/{names[hour]}", data)
            written += 1
            bytes_total += len(data)
    return {"files": written, "bytes": bytes_total, "seconds": time.monotonic() - t0}


def add_endpoint_and_monitor(platform: Any, record: dict[str, Any], window: str) -> tuple[str, str]:
    """A capturing endpoint serving ``record`` and a monitor on it; → (endpoint, monitor) names."""
    from loopml.core.errors import NotFound
    from functools import partial

    from loopml.monitoring import monitors
    from loopml.registry.resolve import lookup
    from loopml.serving.spec import normalise_spec, resolve_spec

    endpoint, monitor, n = ENDPOINT, MONITOR, 1
    while True:  # a reused workdir already has them: fresh names, so earlier capture is not read
        try:
            platform.endpoints.get(endpoint)
        except NotFound:
            break
        n += 1
        endpoint, monitor = f"{ENDPOINT}-{n}", f"{MONITOR}-{n}"

    spec = normalise_spec({"model": f"{record['name']}:{record['version']}", "capture_percent": 100.0})
    platform.endpoints.create(endpoint, spec, resolve_spec(spec, partial(lookup, platform)))
    monitors.create_monitor(platform, monitor, endpoint, window=window)
    return endpoint, monitor


def child_run(home: str, monitor: str, profile_out: str | None) -> None:
    """One monitor run in this (fresh) process; prints its job log with elapsed seconds and memory at
    each line (where the time and memory go), then the figures as JSON."""
    t_start = time.monotonic()
    from loopml.core.settings import Settings
    from loopml.monitoring import run as monitor_run
    from loopml.platform import Platform

    platform = Platform(Settings(home=home))
    rss_before = vm_kib("VmRSS")
    _run, job = platform.monitors.create_run(monitor)

    real_stdout = sys.stdout
    t0 = time.monotonic()

    class Stamped:
        def write(self, text: str) -> int:
            for line in text.splitlines():
                if line.strip():
                    real_stdout.write(f"    [{time.monotonic() - t0:6.2f} s, RSS {vm_kib('VmRSS') / GIB:4.2f} GiB, "
                                      f"peak {vm_kib('VmHWM') / GIB:4.2f}] {line}\n")
            return len(text)

        def flush(self) -> None:
            real_stdout.flush()

    sys.stdout = Stamped()  # the run's printed lines are its job log
    try:
        if profile_out:
            import cProfile

            profiler = cProfile.Profile()
            finished = profiler.runcall(monitor_run.run, platform, {"id": None, "spec": job["spec"]})
            profiler.dump_stats(profile_out)
        else:
            finished = monitor_run.run(platform, {"id": None, "spec": job["spec"]})
    finally:
        sys.stdout = real_stdout
    seconds = time.monotonic() - t0
    peak = vm_kib("VmHWM")
    summary = finished.get("summary") or {}
    print(json.dumps({"seconds": seconds, "process_seconds": time.monotonic() - t_start, "peak_rss": peak,
                      "rss_before": rss_before, "status": finished["status"], "rows": finished["rows"],
                      "records": summary.get("records"), "files": summary.get("files"),
                      "malformed": finished["malformed"], "violations": [v["key"] for v in finished["violations"]],
                      "report": finished.get("report_key")}), flush=True)
    platform.close()


def throughput(platform: Any, m: Model, frame: Any, home: Path, records: int, files: int,
               profile: Path | None) -> dict[str, Any]:
    endpoint, monitor = add_endpoint_and_monitor(platform, m.record, window="6h")
    end = datetime.now(timezone.utc) - timedelta(seconds=60)
    written = write_capture(platform, m, frame, endpoint, records, files, end, timedelta(hours=3))
    log(f"  wrote {records:,} captured records: {written['files']} files, {written['bytes'] / 1e6:,.0f} MB "
        f"in {written['seconds']:.1f} s")
    proc = subprocess.run([sys.executable, __file__, "--child-run", str(home), "--monitor", monitor]
                          + (["--profile", str(profile)] if profile else []), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    for line in proc.stdout.splitlines()[:-1]:
        log(line)
    if proc.returncode != 0:
        raise RuntimeError(f"monitor run failed:\n{proc.stderr[-3000:]}")
    return {**written, **json.loads(proc.stdout.splitlines()[-1])}


# -- main ---------------------------------------------------------------------------------------

def fmt_alarms(r: dict) -> str:
    if not r["alarms"]:
        return "none"
    return "; ".join(f"window {w}: {', '.join(names)}" for w, names in r["alarms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="captured records for the throughput run")
    ap.add_argument("--files", type=int, default=100, help="capture files they are written in (about)")
    ap.add_argument("--windows", type=int, default=20, help="unshifted windows per dataset (false alarms)")
    ap.add_argument("--window-rows", type=int, default=200, help="rows per unshifted window")
    ap.add_argument("--max-requests", type=int, default=1000, help="post-shift requests streamed at most")
    ap.add_argument("--step", type=int, default=50, help="requests between drift checks after the shift")
    ap.add_argument("--workdir", type=Path, default=None, help="LoopML home + bundles (default: a temp dir)")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the monitor run into this file")
    ap.add_argument("--power", action="store_true",
                    help="run the drift power study instead (bench/drift_power.py; see its --help)")
    ap.add_argument("--child-run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--monitor", default=MONITOR, help=argparse.SUPPRESS)
    if "--power" in sys.argv[1:]:  # before parsing: the power study has its own options (and --help)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from drift_power import main as power_main

        power_main([a for a in sys.argv[1:] if a != "--power"])
        return
    args = ap.parse_args()
    if args.child_run:
        child_run(args.child_run, args.monitor, str(args.profile) if args.profile else None)
        return
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import numpy as np

    from loopml.core.settings import Settings
    from loopml.datasets.service import load_version
    from loopml.monitoring.drift import DEFAULT_THRESHOLDS
    from loopml.platform import Platform

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loopml-bench-monitoring-"))
    home = workdir / "home"
    reuse = home.exists()  # a workdir of an earlier run: its trained models are reused
    home.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    log(f"workdir {workdir}; default thresholds {DEFAULT_THRESHOLDS}")
    platform = Platform(Settings(home=home, reconcile_interval_s=0.2))
    if reuse:
        records = {"mnist": model_of(platform, "mnist-cnn"), "penguins": model_of(platform, "penguins-mlp")}
        log(f"models reused from {home}: {', '.join(r['ref'] for r in records.values())}")
        for name in records:
            shutil.rmtree(workdir / "bundles" / name, ignore_errors=True)
    else:
        log("models (real training jobs; baselines written at registration):")
        records = train_models(platform)
    models = {name: Model(platform, rec, workdir / "bundles" / name) for name, rec in records.items()}

    # held-out rows and their answers
    mnist, peng = models["mnist"], models["penguins"]
    content, splits = load_version(platform, platform.datasets.get("mnist"))
    held = np.random.default_rng(8).permutation(np.concatenate([splits["validation"], splits["test"]]))
    t0 = time.monotonic()
    # registration profiles the held-out rows; windows must not reuse the baseline's rows, so half of
    # them make the bench's baseline (the same compute_baseline) and the other half the traffic
    base_rows, pool = content.images[held[: len(held) // 2]], content.images[held[len(held) // 2:]]
    mnist.use_baseline(base_rows)
    pool_proba, inv_proba = mnist.proba(pool), mnist.proba(255 - pool)
    pool_emb, inv_emb = mnist.embed(pool), mnist.embed(255 - pool)
    log(f"  mnist: registration baseline: {mnist.registered_source}; the bench's baseline: "
        f"{mnist.baseline['rows']} of the held-out rows ({len(mnist.baseline_embeddings)} embedded), traffic "
        f"from the other {len(pool)} ({time.monotonic() - t0:.1f} s)")
    pcontent, psplits = load_version(platform, platform.datasets.get("penguins"))
    pframe = pcontent.frame.reset_index(drop=True)
    pproba = peng.proba(pframe)
    pheld = np.concatenate([psplits["validation"], psplits["test"]])
    log(f"  penguins: registration baseline: {peng.registered_source}; {len(pframe)} rows in all, "
        f"{len(pheld)} held out")

    log(f"\n1. false alarms, {args.windows} windows of unshifted traffic, default thresholds (goal <= 1 in 20)")
    t0 = time.monotonic()
    all_held = np.concatenate([base_rows, pool])
    fa_mnist = mnist_false_alarms_resplit(mnist, all_held, np.concatenate([mnist.proba(base_rows), pool_proba]),
                                          np.concatenate([mnist.embed(base_rows), pool_emb]), args.windows,
                                          args.window_rows)
    log(f"  mnist     {len(fa_mnist['alarms'])}/{fa_mnist['windows']} windows alarmed (random re-splits of the "
        f"{len(all_held)} held-out rows: baseline of {fa_mnist['baseline']} vs a disjoint {args.window_rows}-row "
        f"window, {fa_mnist['checks']} checks per window incl. embedding MMD) [{fmt_alarms(fa_mnist)}]")
    fa_mboot = mnist_false_alarms(mnist, pool, pool_proba, pool_emb, args.windows, args.window_rows)
    log(f"  mnist, for information: one fixed split (the detection baseline) vs {args.window_rows}-row bootstrap "
        f"windows of the other {len(pool)} rows: {len(fa_mboot['alarms'])}/{fa_mboot['windows']} "
        f"[{fmt_alarms(fa_mboot)}]")
    fa_peng = penguins_false_alarms_resplit(peng, pframe, pproba, args.windows)
    log(f"  penguins  {len(fa_peng['alarms'])}/{fa_peng['windows']} windows alarmed "
        f"(random re-splits: baseline half vs {fa_peng['rows']}-row other half, min_samples 150, "
        f"{fa_peng['checks']} checks per window) [{fmt_alarms(fa_peng)}]")
    fa_boot = penguins_false_alarms_bootstrap(peng, pframe.iloc[pheld].reset_index(drop=True), pproba[pheld],
                                              args.windows, args.window_rows)
    log(f"  penguins, for information: registration baseline ({peng.registered_source}) vs "
        f"{args.window_rows}-row bootstrap windows of only "
        f"{fa_boot['distinct']} distinct held-out rows: {len(fa_boot['alarms'])}/{fa_boot['windows']} "
        f"[{fmt_alarms(fa_boot)}]")
    log(f"  ({time.monotonic() - t0:.1f} s)")

    log(f"\n2. detection delay: requests after the shift until the first violation (checked every {args.step}, "
        f"min_samples {DEFAULT_THRESHOLDS['min_samples']}, at most {args.max_requests})")
    t0 = time.monotonic()
    detections = [("mnist", *d) for d in mnist_detection(mnist, pool, pool_proba, pool_emb, inv_proba, inv_emb,
                                                        args.max_requests, args.step)]
    detections += [("penguins", *d) for d in penguins_detection(peng, pframe, pproba, args.max_requests, args.step)]
    for dataset, label, n, names in detections:
        found = f"{n:>5}" if n is not None else f" none within {args.max_requests}"
        log(f"  {dataset:9} {label:34} {found}  {', '.join(names)}")
    log(f"  ({time.monotonic() - t0:.1f} s)")

    log(f"\n3. throughput: one real monitor run over {args.records:,} captured penguins records")
    tp = throughput(platform, peng, pframe, home, args.records, args.files, args.profile)
    platform.close()
    rate = (tp["records"] or 0) / tp["seconds"]
    log(f"  run: {tp['status']}, {tp['records']:,} records / {tp['rows']:,} rows from {tp['files']} files, "
        f"{tp['malformed']} malformed, violations {tp['violations'] or 'none'}")
    log(f"  wall {tp['seconds']:.1f} s ({rate:,.0f} records/s); child process {tp['process_seconds']:.1f} s incl. "
        f"imports; peak RSS {tp['peak_rss'] / GIB:.2f} GiB (after imports {tp['rss_before'] / GIB:.2f} GiB)")

    fa_ok = [len(r["alarms"]) * 20 <= r["windows"] for r in (fa_mnist, fa_peng)]
    detected = all(n is not None for d, label, n, _ in detections if "control" not in label)
    quiet = all(n is None for d, label, n, _ in detections if "control" in label)
    log("\ngoals:")
    log(f"  false alarms <= 1 in 20: mnist {len(fa_mnist['alarms'])}/{fa_mnist['windows']}, penguins "
        f"{len(fa_peng['alarms'])}/{fa_peng['windows']} -> {'met' if all(fa_ok) else 'MISSED'}")
    log(f"  every shift detected within {args.max_requests} requests, controls quiet: "
        f"{'yes' if detected and quiet else 'NO'}")
    log(f"  monitor run over {tp['records']:,} records < 60 s: {tp['seconds']:.1f} s -> "
        f"{'met' if tp['seconds'] < 60 else 'MISSED'}; < 1 GiB: {tp['peak_rss'] / GIB:.2f} GiB -> "
        f"{'met' if tp['peak_rss'] < GIB else 'MISSED'}")
    log(f"total {time.monotonic() - t_all:.0f} s")


if __name__ == "__main__":
    main()
