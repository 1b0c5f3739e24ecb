"""Evidently's drift verdicts for bench/drift_power.py, run in Evidently's own venv (never imports loopml).

    python evidently_drift.py windows MANIFEST.json OUT.json [SHARD SHARDS]   # the power study's windows
    python evidently_drift.py big DIR                          # one timed verdict on DIR/{reference,current}.parquet

``windows``: MANIFEST lists per dataset its numerical / categorical columns and two parquet files:
references (column ``__ref`` = resample) and windows (``__win`` = window id, ``__ref`` = its
reference). Each window gets ``Report([DataDriftPreset()])`` at its defaults (per-column test and
threshold chosen by Evidently, dataset drift when ≥ 50 % of the columns drifted); OUT gets
``{"version", "seconds", "results": {window id: {"count", "share", "dataset_drift", "any_column",
"columns"}}}``. With SHARD SHARDS, only the windows whose id % SHARDS == SHARD (one process per core). ``big``: prints {"seconds", "extra_peak", "count", "share", "dataset_drift", "columns", "version",
"without_rendering": {the same, timed with quiet_rendering}} as JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from importlib import metadata

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

warnings.filterwarnings("ignore")  # numpy's divide warnings from inside evidently, once per window


@contextlib.contextmanager
def quiet_rendering():
    """Skip the HTML widgets (plotly figures) Report.run builds eagerly for every column: ~90 % of
    its time on small windows, and they change no number. The verdicts come from the same
    calculations (DriftedColumnsCount's legacy DatasetDriftMetric, each ValueDrift's
    get_one_column_drift); skipped are the figures and the preset's render-only DataDriftTable.
    For the power study's windows (checked against a full run on each dataset's first window),
    NOT for the timed verdict, which is timed both ways."""
    from evidently.core import report as core_report
    from evidently.metrics import column_statistics
    from evidently.presets import drift

    class NoRenderer:
        def render_html(self, metric):
            return []

    patches = [(core_report, "find_metric_renderer", lambda *args, **kwargs: NoRenderer()),
               (column_statistics.ValueDriftCalculation, "_render", lambda self, *args, **kwargs: []),
               (drift.DataDriftPreset, "render", lambda self, *args, **kwargs: [])]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def run_report(current, reference) -> dict:
    return verdict(Report([DataDriftPreset()]).run(current_data=current, reference_data=reference))


def verdict(snapshot) -> dict:
    """Dataset-level drift and the drifted columns from a DataDriftPreset snapshot."""
    count = share = None
    columns = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
            drift_share = float(config.get("drift_share", 0.5))
        elif config["type"].endswith(":ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            # p-value tests drift below their threshold, distances (Wasserstein, JS) at or above it
            if ("p_value" in config["method"] and value <= threshold) or \
                    ("p_value" not in config["method"] and value >= threshold):
                columns.append(config["column"])
    return {"count": count, "share": share, "dataset_drift": bool(share >= drift_share),
            "any_column": bool(count >= 1), "columns": columns}


def run_windows(manifest_path: str, out_path: str, shard: int = 0, shards: int = 1) -> None:
    t0 = time.monotonic()
    manifest = json.loads(open(manifest_path).read())
    total = sum(spec["count"] for spec in manifest)
    done, results = 0, {}
    for spec in manifest:
        definition = DataDefinition(numerical_columns=spec["numerical"], categorical_columns=spec["categorical"])
        cols = spec["numerical"] + spec["categorical"]
        refs = pd.read_parquet(spec["references"])
        references = {int(r): Dataset.from_pandas(g[cols].reset_index(drop=True), data_definition=definition)
                      for r, g in refs.groupby("__ref")}
        windows = pd.read_parquet(spec["windows"])
        windows = windows[windows["__win"] % shards == shard]
        for win, g in windows.groupby("__win", sort=False):
            current = Dataset.from_pandas(g[cols].reset_index(drop=True), data_definition=definition)
            reference = references[int(g["__ref"].iloc[0])]
            with quiet_rendering():
                results[str(int(win))] = run_report(current, reference)
            if win == windows["__win"].iloc[0]:  # the shortcut must not change a verdict
                full = run_report(current, reference)
                if full != results[str(int(win))]:
                    raise SystemExit(f"verdict without rendering differs: {results[str(int(win))]} vs {full}")
            done += 1
            if done % 100 == 0:
                print(f"  [evidently {shard + 1}/{shards}] {done}/~{total // shards} windows, "
                      f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    with open(out_path, "w") as out:
        json.dump({"version": metadata.version("evidently"), "seconds": time.monotonic() - t0,
                   "results": results}, out)


def vm_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def timed(reference, current, definition) -> dict:
    """One verdict on fresh Datasets: seconds and the peak RSS above the RSS before it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS: what follows is the verdict's own peak
    before = vm_bytes("VmRSS")
    t0 = time.monotonic()
    result = run_report(Dataset.from_pandas(current, data_definition=definition),
                        Dataset.from_pandas(reference, data_definition=definition))
    return {"seconds": time.monotonic() - t0, "extra_peak": vm_bytes("VmHWM") - before, **result}


def run_big(folder: str) -> None:
    reference = pd.read_parquet(f"{folder}/reference.parquet")
    current = pd.read_parquet(f"{folder}/current.parquet")
    definition = DataDefinition(numerical_columns=list(reference.columns))
    # warm-up on a few rows: lazy imports and registries are not part of the verdict
    run_report(Dataset.from_pandas(current.head(500), data_definition=definition),
               Dataset.from_pandas(reference, data_definition=definition))
    shipped = timed(reference, current, definition)
    with quiet_rendering():
        quiet = timed(reference, current, definition)
    print(json.dumps({**shipped, "version": metadata.version("evidently"), "without_rendering": quiet}))


if __name__ == "__main__":
    if sys.argv[1] == "windows":
        run_windows(sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:6]))
    elif sys.argv[1] == "big":
        run_big(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
