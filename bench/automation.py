"""Automation speed (issue 4), one run, figures only (not a test).

    .venv/bin/python bench/automation.py [--samples 10] [--chain 1000] [--no-retrain] [--workdir DIR]

Prints, measured side by side in one run on this machine:

  engine       a 1,000-state Pass chain: transitions/s of the workflow engine alone (in memory,
               no I/O) and of a real execution in a real ``loopml server`` (SQLite, every event
               persisted: state + history rows in one transaction), from the execution record's
               started/ended times.
  triggers     latency from an object written to the function started (the handler's first line
               stamps the time) for an object trigger on a local folder and on S3 (a real
               ``moto_server`` on loopback), with the default poll interval (1 s) and with 0.2 s.
  retrain      the retraining workflow (``--template retrain`` on the ``digits`` sample: train →
               evaluate challenger vs champion → register → move the alias → endpoint follows) run
               by the control plane, against the same steps run by hand with the SDK, one after
               the other as fast as a script can: the control plane's added latency is the
               difference (and the per-step gaps between one task ending and the next starting).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import _common  # noqa: E402 - bench/_common.py
from _common import free_port, log  # noqa: E402

STAMP_FUNCTION = '''
import time

def handler(event, context):
    started = time.time()
    return {"started": started, "key": event["Records"][0]["s3"]["object"]["key"]}
'''


def pass_chain(n: int) -> dict[str, Any]:
    states = {f"S{i}": {"Type": "Pass", "Result": {"i": i}, "ResultPath": "$.last", "Next": f"S{i + 1}"}
              for i in range(n - 1)}
    states[f"S{n - 1}"] = {"Type": "Pass", "End": True}
    return {"Comment": f"{n}-state Pass chain", "StartAt": "S0", "States": states}


@contextmanager
def moto() -> Iterator[str]:
    exe = Path(sys.executable).parent / "moto_server"
    port = free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def loopml_server(home: Path, **env_extra: str) -> Iterator[Any]:
    from loopml.sdk.client import Client

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    with _common.loopml_server(home, ready_s=60, **env_extra) as url:
        client = Client(url, token="", timeout=60)
        try:
            yield client
        finally:
            client.close()


def wait_until(fetch, timeout: float, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("gave up")


# -- engine ------------------------------------------------------------------------------------

def bench_engine(workdir: Path, n: int) -> dict[str, float]:
    from loopml.core.timeutil import parse_iso
    from loopml.workflows.engine import Execution

    definition = pass_chain(n)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        ex = Execution(definition, execution_id="bench")
        ex.start({"x": 1}, now="2026-01-01T00:00:00+00:00")
        best = max(best, n / (time.perf_counter() - t0))
    log(f"engine in memory: {n}-state Pass chain: {best:,.0f} transitions/s (best of 3)")

    with loopml_server(workdir / "engine-home") as c:
        c.create_workflow("chain", definition)
        rates = []
        for _ in range(2):
            rec = c.start_execution("chain", {"x": 1})
            rec = c.wait_execution(rec["id"], timeout=600, poll=0.2)
            assert rec["status"] == "SUCCEEDED", rec
            took = (parse_iso(rec["ended_at"]) - parse_iso(rec["started_at"])).total_seconds()
            rates.append(n / took)
            events = c.execution_history(rec["id"])
            log(f"engine persisted (SQLite, real server): {n} transitions in {took:.2f} s = "
                f"{n / took:,.0f} transitions/s; {len(events)} history events")
    return {"memory": best, "persisted": max(rates)}


# -- triggers ----------------------------------------------------------------------------------

def bench_triggers(workdir: Path, samples: int) -> dict[str, list[float]]:
    import fsspec

    results: dict[str, list[float]] = {}
    with moto() as s3_url:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        s3 = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_url}, use_listings_cache=False)
        s3.mkdir("bench-bucket")
        for interval in ("1.0", "0.2"):
            with loopml_server(workdir / f"trigger-home-{interval}", LOOPML_S3_ENDPOINT_URL=s3_url,
                               LOOPML_TRIGGER_POLL_INTERVAL_S=interval,
                               AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                               AWS_DEFAULT_REGION="us-east-1") as c:
                fn = workdir / "stamp.py"
                fn.write_text(STAMP_FUNCTION)
                c.create_function("stamp", fn, memory_mb=256)
                local_dir = workdir / f"drop-{interval}"
                local_dir.mkdir(exist_ok=True)
                c.create_trigger("local", objects=str(local_dir) + "/", function="stamp")
                c.create_trigger("s3", objects=f"s3://bench-bucket/drop-{interval}/", function="stamp")
                for name, write in (
                    ("local", lambda i: (local_dir / f"obj-{i}.json").write_bytes(b"{}")),
                    ("s3", lambda i: s3.pipe_file(f"bench-bucket/drop-{interval}/obj-{i}.json", b"{}")),
                ):
                    lat = []
                    for i in range(samples):
                        tmp = None
                        t0 = time.time()
                        write(i)
                        firing = wait_until(lambda: next((f for f in c.trigger_history(name, limit=5)
                                                          if f"obj-{i}.json" in json.dumps(f.get("event"))), None), 60)
                        inv = wait_until(lambda: (lambda r: r if r["status"] in ("succeeded", "failed") else None)(
                            c.function_invocation("stamp", firing["started_id"])), 60)
                        assert inv["status"] == "succeeded", inv
                        lat.append(inv["result"]["started"] - t0)
                        del tmp
                        time.sleep(0.37)  # de-phase from the poll period
                    key = f"{name} (poll {interval} s)"
                    results[key] = lat
                    log(f"trigger {key}: object written → function started: p50 "
                        f"{statistics.median(lat) * 1000:.0f} ms, min {min(lat) * 1000:.0f}, "
                        f"max {max(lat) * 1000:.0f} ms over {len(lat)}")
    return results


# -- retraining: workflow vs by hand -----------------------------------------------------------

def retrain_by_hand(c: Any, epochs: int) -> float:
    """The template's steps from a script, each started the moment the previous one ended."""
    t0 = time.perf_counter()
    train = c.wait(c.train("digits", model="cnn", params={"epochs": epochs}, register_as="digits-cnn",
                           register=False)["id"], poll=0.05)
    ev = c.wait(c.evaluate(models={"challenger": train["result"]["model_ref"], "champion": "digits-cnn@production"},
                           dataset=train["result"]["dataset"], min_improvement=-1.0)["id"], poll=0.05)
    assert ev["result"]["promote"], ev["result"]
    reg = c.register_trained(train["id"], "digits-cnn")
    c.set_alias("digits-cnn", "production", reg["version"])
    wait_until(lambda: (lambda e: e["ready"] and any(v["version"] == reg["version"]
                                                     for v in e["resolved"]["variants"]))(c.endpoint("digits")), 300)
    return time.perf_counter() - t0


def retrain_by_workflow(c: Any) -> tuple[float, list[float]]:
    from loopml.core.timeutil import parse_iso

    t0 = time.perf_counter()
    rec = c.start_execution("retrain-digits", {})
    rec = c.wait_execution(rec["id"], timeout=1800, poll=0.05)
    took = time.perf_counter() - t0
    assert rec["status"] == "SUCCEEDED", rec
    # hand-over: a job ended (its own record) → the runner saw it and started the next task
    events = c.execution_history(rec["id"])
    gaps, ended = [], None
    for ev in events:
        handle = (ev.get("details") or {}).get("handle") or {}
        if ev["type"] == "TaskStarted" and ended is not None:
            gaps.append((parse_iso(ev["at"]) - ended).total_seconds())
            ended = None
        if ev["type"] == "TaskStarted" and handle.get("job_id"):
            job = c.job(handle["job_id"])
            ended = parse_iso(job["ended_at"]) if job.get("ended_at") else None
    return took, gaps


def bench_retrain(workdir: Path, epochs: int, pairs: int) -> dict[str, float]:
    with loopml_server(workdir / "retrain-home") as c:
        c.add_dataset("digits", "sample:digits")
        job = c.wait(c.train("digits", model="cnn", params={"epochs": epochs}, register_as="digits-cnn")["id"])
        version = int(job["result"]["model_ref"].split(":")[1])
        c.set_alias("digits-cnn", "production", version)
        c.create_endpoint("digits", model="digits-cnn@production", wait=True, timeout=300)
        c.create_workflow("retrain-digits", template="retrain",
                          template_params={"dataset": "digits", "model": "cnn", "endpoint": "digits",
                                           "epochs": epochs, "min_improvement": -1.0})
        hand, flow, gaps = [], [], []
        for i in range(pairs):  # interleaved, so drift on the shared machine hits both alike
            hand.append(retrain_by_hand(c, epochs))
            took, g = retrain_by_workflow(c)
            flow.append(took)
            gaps += g
            log(f"retrain pair {i + 1}: by hand (SDK script) {hand[-1]:.1f} s, by the workflow {flow[-1]:.1f} s")
        h, w = statistics.median(hand), statistics.median(flow)
        log(f"retrain (train {epochs} epoch(s) on digits → evaluate → register → alias → endpoint serves it): "
            f"median by hand {h:.1f} s, by the workflow {w:.1f} s: the control plane adds {w - h:+.1f} s "
            f"({(w - h) / h * 100:+.1f} %)")
        if gaps:
            log(f"  job ended → next task started (the runner's hand-over): median "
                f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms over {len(gaps)}")
    return {"by_hand_s": h, "workflow_s": w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--chain", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2, help="interleaved by-hand / workflow retraining runs")
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--no-triggers", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loopml-bench-automation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"bench/automation.py on {os.cpu_count()} cores; workdir {workdir}")
    bench_engine(workdir, args.chain)
    if not args.no_triggers:
        bench_triggers(workdir, args.samples)
    if not args.no_retrain:
        bench_retrain(workdir, args.epochs, args.pairs)


if __name__ == "__main__":
    main()
