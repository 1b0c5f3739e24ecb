"""`make demo`, monitoring act: the closed loop, step by step, with the numbers.

clean traffic → monitor run: no drift → traffic shifts (inverted digits) → monitor run: drift,
an alert → the alert trigger starts the retraining workflow, which waits for labels → true
labels for the new traffic arrive → a challenger trained on the labelled traffic is compared
with the champion on the same held-out rows and promoted only if better → the endpoint serves
it → fresh traffic of the new kind → the next monitor run is clean, the alerts resolved.

    python scripts/demo_monitoring.py DATA_PLANE_URL MONITOR ENDPOINT TRIGGER WORK_DIR
"""

from __future__ import annotations

import csv
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import orjson

from loopml.core.settings import load_settings
from loopml.datasets.service import load_version
from loopml.platform import Platform
from loopml.sdk.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_automation import follow_execution, wait_for  # noqa: E402


def images() -> dict[str, tuple[np.ndarray, list[str]]]:
    """Held-out digits for clean traffic; training-split digits, inverted, for the shift (new
    to the model: it never saw an inverted digit); held-out ones, inverted, for the final check."""
    platform = Platform(load_settings(), create_schema=False)
    try:
        content, splits = load_version(platform, platform.datasets.get("mnist", 1))
    finally:
        platform.close()
    rng = np.random.default_rng(11)
    test = rng.permutation(splits["test"])
    train = rng.permutation(splits["train"])

    def part(idx: np.ndarray, invert: bool) -> tuple[np.ndarray, list[str]]:
        x = content.images[idx][..., 0].astype(np.float32)
        return (255.0 - x if invert else x), [str(v) for v in np.asarray(content.labels)[idx]]

    return {"clean": part(test[:300], False), "shift": part(train[:1500], True),
            "fresh": part(test[300:500], True)}


def send(url: str, endpoint: str, x: np.ndarray, tag: str) -> list[str]:
    """One request per image, each with an inference id (how labels find it later)."""
    ids, failed = [], 0
    with httpx.Client(timeout=30) as http:
        for img in x:
            iid = f"{tag}-{uuid.uuid4().hex[:12]}"
            resp = http.post(f"{url}/endpoints/{endpoint}/invocations",
                             content=orjson.dumps({"instances": [img.tolist()]}),
                             headers={"Content-Type": "application/json",
                                      "X-Amzn-SageMaker-Inference-Id": iid})
            failed += resp.status_code != 200
            ids.append(iid)
    print(f"  sent {len(ids)} {tag} requests ({failed} failed)")
    return ids


def show_run(run: dict) -> None:
    summary = run.get("summary") or {}
    print(f"  monitor run {run['id']}: {run['status']}, {run.get('rows')} rows, "
          f"{len(run.get('violations') or [])} violation(s), {run.get('malformed') or 0} malformed lines")
    for f in summary.get("features") or []:
        stats = f.get("statistics") or {}
        shown = ", ".join(f"{k} {v:.3g}" for k, v in stats.items() if isinstance(v, (int, float)))
        print(f"    {'DRIFT' if f.get('violated') else 'ok   '} {f['name']:<22} {shown}")
    for change in ("opened", "resolved"):
        for a in (summary.get("alerts") or {}).get(change) or []:
            print(f"    alert {change}: {a.get('key') if isinstance(a, dict) else a}")
    if summary.get("report_html"):
        print(f"    report: {summary['report_html']}")


def main() -> None:
    url, monitor, endpoint, trigger, work = sys.argv[1:6]
    c = Client()
    data = images()

    print("1. clean traffic: held-out digits")
    send(url, endpoint, data["clean"][0], "clean")
    time.sleep(6)  # capture lands about once a second; a run reads up to 5 s before now
    show_run(c.run_monitor(monitor, timeout=900))

    print("2. the traffic shifts: inverted digits")
    ids = send(url, endpoint, data["shift"][0], "shift")
    time.sleep(6)
    run = c.run_monitor(monitor, timeout=900)
    show_run(run)
    open_alerts = c.alerts(open=True, monitor=monitor)
    print(f"  open alerts: {', '.join(a['key'] for a in open_alerts) or 'none'}")
    firing = wait_for("the alert trigger", lambda: next(iter(c.trigger_history(trigger, limit=1)), None), 60)
    execution = firing["started_id"]
    print(f"  alert trigger {trigger} fired → execution {execution}")
    time.sleep(3)
    rec = c.execution(execution)
    print(f"  execution {rec['status']}, waiting for labelled traffic (Retry on Monitor.NotEnoughLabels)")

    print("3. true labels for the new traffic arrive")
    labels = Path(work) / "shift-labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["inference_id", "label"])
        w.writerows(zip(ids, data["shift"][1]))
    up = c.upload_labels(monitor, labels)
    print(f"  uploaded {up['stored']} labels ({up['unknown_ids']['count']} unknown ids, {up['invalid']} invalid)")

    print("4. the retraining workflow runs")
    rec = follow_execution(c, execution, 1800)
    out = rec.get("output") or {}
    print(f"  execution {rec['status']}: " + (f"promoted {out.get('ref')}: {out.get('reason')}" if out.get("promoted")
                                             else f"kept the champion: {out.get('reason')}"))
    ep = c.endpoint(endpoint)
    served = [f"{v['model']}:{v['version']}" for v in (ep.get("resolved") or {}).get("variants") or []]
    print(f"  endpoint {endpoint}: {ep['status']}, serving {', '.join(served)}")

    print("5. fresh inverted digits (never sent before) → the next monitor run")
    send(url, endpoint, data["fresh"][0], "fresh")
    time.sleep(6)
    run = c.run_monitor(monitor, timeout=900)
    show_run(run)
    still = c.alerts(open=True, monitor=monitor)
    print(f"  open alerts now: {', '.join(a['key'] for a in still) or 'none'}")
    if rec["status"] != "SUCCEEDED":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
