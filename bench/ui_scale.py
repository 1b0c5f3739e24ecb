"""Dashboard at scale (issue 16), one run, figures only (not a test).

    .venv/bin/python bench/ui_scale.py [--jobs 3000] [--versions 2000] [--models 300] [--small 30]
                                       [--repeat 5] [--workdir DIR]

Two real ``loopml server`` processes on temporary SQLite homes: a *big* one holding ``--jobs``
finished job records, a model ``big`` with ``--versions`` versions and ``--models`` other models,
and a *small* one holding ``--small`` of each. Rows go in through the store repositories before the
server starts (no training; jobs are written already succeeded, so no worker picks them up).

Debian's chromium, driven by Playwright, then loads the Jobs page, the Models page and the model
page of ``big`` on each server, a fresh page load each time, and prints the median time from
navigation to the list being rendered and the JSON bytes the page fetched, big vs small (ratio).
It also prints how many bytes the same lists would be unpaged (what paging saves).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _common import log, loopml_server  # noqa: E402 - bench/_common.py

CHROMIUM = "/usr/bin/chromium"


def fill(home: Path, *, jobs: int, versions: int, models: int) -> None:
    """Write the rows straight through the store (one transaction per table), as a busy
    installation would have them: succeeded training jobs with results, model versions with
    metrics/hyperparameters/lineage like real ones."""
    from loopml.core.jobstatus import SUCCEEDED
    from loopml.core.settings import Settings
    from loopml.core.timeutil import utcnow
    from loopml.platform import Platform
    from loopml.store import tables as t

    platform = Platform(Settings(home=home))
    now = utcnow()
    metrics = {"loss": 0.08, "accuracy": 0.975, "val_loss": 0.11, "val_accuracy": 0.968,
               "test_accuracy": 0.9711, "test_loss": 0.1034}
    hparams = {"epochs": 5, "batch_size": 64, "learning_rate": 0.001, "filters": 32, "dropout": 0.25}
    try:
        with platform.meta.session() as s:
            for i in range(jobs):
                at = now - timedelta(seconds=jobs - i)
                s.add(t.Job(id=f"job-{i:06d}", kind="train", status=SUCCEEDED,
                            spec={"dataset": "digits:1", "model": "cnn", "params": hparams, "register_as": "big"},
                            progress={"epoch": 5, "epochs": 5}, result={"model_ref": f"big:{i + 1}", "metrics": metrics},
                            worker_host="node-a", worker_pid=1000 + i, created_at=at, started_at=at, ended_at=at,
                            heartbeat_at=at))
        fields = dict(kind="image", template="cnn", hparams=hparams, metrics=metrics,
                      lineage={"dataset": "digits:1", "job": "job-000000"}, runtimes=["keras", "onnx"],
                      dataset="digits:1", trusted=True)
        with platform.meta.session() as s:
            for v in range(1, versions + 1):
                platform.models.add_version("big", v, session=s, job_id=f"job-{v % max(jobs, 1):06d}",
                                            artifact_prefix=f"models/big/{v}", **fields)
            for m in range(models):
                platform.models.add_version(f"model-{m:04d}", 1, session=s, job_id=None,
                                            artifact_prefix=f"models/m{m}/1", **fields)
        platform.models.set_alias("big", "prod", versions)
    finally:
        platform.close()


def json_bytes(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as resp:
        return len(resp.read())


def load(browser: Any, base: str, route: str, ready: str, rows_selector: str) -> tuple[float, int, int]:
    """One fresh page load of ``#/route``: (seconds until the page says it is ready and its list
    has rows, JSON bytes fetched, rows shown)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    fetched: list[Any] = []
    page.on("response", lambda r: fetched.append(r))
    try:
        fragment = f"#/{route}"
        started = time.perf_counter()
        page.goto(f"{base}/ui/{fragment}")
        page.wait_for_function("([f, n, sel]) => { const p = document.getElementById('page');"
                               " return p && p.dataset.route === f && p.dataset.ready === n"
                               " && document.querySelectorAll(sel).length > 0; }",
                               arg=[fragment, ready, rows_selector], timeout=120_000, polling=10)
        took = time.perf_counter() - started
        rows = page.locator(rows_selector).count()
        total = 0
        for r in fetched:
            if "json" in (r.headers.get("content-type") or ""):
                try:
                    total += len(r.body())
                except Exception:  # noqa: BLE001 - an aborted stream (none expected on these pages)
                    pass
        return took, total, rows
    finally:
        page.close()


PAGES = [  # (label, route, ready, selector of the list's rows)
    ("Jobs", "jobs", "jobs", "#page table tbody tr"),
    ("Models", "models", "models", "#page table tbody tr"),
    ("Model big", "models/big", "models", "#page table tbody tr"),
]


def measure(browser: Any, base: str, repeat: int) -> dict[str, tuple[float, int, int]]:
    out = {}
    for label, route, ready, sel in PAGES:
        load(browser, base, route, ready, sel)  # warm: static files cached, server paths hot
        runs = [load(browser, base, route, ready, sel) for _ in range(repeat)]
        out[label] = (statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--versions", type=int, default=2000)
    ap.add_argument("--models", type=int, default=300)
    ap.add_argument("--small", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loopml-uiscale-"))
    homes = {"big": workdir / "big", "small": workdir / "small"}
    sizes = {"big": (args.jobs, args.versions, args.models), "small": (args.small, args.small, args.small - 1)}
    results: dict[str, dict[str, tuple[float, int, int]]] = {}
    unpaged: dict[str, dict[str, int]] = {}
    try:
        for which, home in homes.items():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            jobs, versions, models = sizes[which]
            started = time.perf_counter()
            fill(home, jobs=jobs, versions=versions, models=models)
            log(f"{which}: {jobs} jobs, {versions} versions of 'big', {models} other models written in "
                f"{time.perf_counter() - started:.1f} s")
            with loopml_server(home, ready_s=90) as base, sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM)
                try:
                    results[which] = measure(browser, base, args.repeat)
                finally:
                    browser.close()
                unpaged[which] = {"Jobs": json_bytes(f"{base}/jobs?limit=1000"),
                                  "Models": json_bytes(f"{base}/models"),
                                  "Model big": json_bytes(f"{base}/models/big")}
        load1 = os.getloadavg()[0]
        log(f"\nload average (1 min) at the end: {load1:.2f}; median of {args.repeat} fresh page loads each\n")
        log(f"{'page':<10} {'small s':>8} {'big s':>8} {'ratio':>6} | {'small KB':>9} {'big KB':>9} {'ratio':>6} "
            f"| {'rows':>4} | big list unpaged KB")
        for label, *_ in PAGES:
            s_t, s_b, s_r = results["small"][label]
            b_t, b_b, b_r = results["big"][label]
            log(f"{label:<10} {s_t:>8.3f} {b_t:>8.3f} {b_t / s_t:>6.2f} | {s_b / 1024:>9.1f} {b_b / 1024:>9.1f} "
                f"{b_b / max(s_b, 1):>6.2f} | {b_r:>4} | {unpaged['big'][label] / 1024:.0f}"
                + (" (limit=1000: the route's cap)" if label == "Jobs" else ""))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
