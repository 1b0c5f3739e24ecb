"""THE closed loop of issue 5, for real: drift in live traffic → alert → retraining on the labelled
traffic → promotion → the endpoint serves the new version → the drift is gone.

One real control plane (uvicorn + ControlLoop + worker processes + a serving process), driven
only through the SDK, with real training jobs on the ``mnist`` sample:

a) mnist-cnn:1 trained (baseline at registration), alias production, endpoint ``mnist`` with 100 %
   capture, monitor ``mnist-mon``, workflow ``retrain-mnist`` (template retrain with
   monitor=mnist-mon, dataset=mnist-live) and an alert trigger starting it;
b) clean held-out digits → a monitor run without violations, no alert;
c) INVERTED digits (255 − x) → violations → alerts → the trigger started ONE execution, which
   waits in CollectLabelled (Monitor.NotEnoughLabels, retried);
d) their labels arrive → mnist-live:1 (the labelled inverted requests) → Train → Evaluate (the
   champion is bad on inverted digits) → promoted → the endpoint serves mnist-cnn:2, while a
   client hammering it sees no failed request;
e) fresh inverted digits → no violations against mnist-cnn:2's baseline (its held-out rows are
   inverted digits) → the drift alerts are resolved.

Waits poll for conditions with deadlines; nothing asserts on durations.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import httpx
import numpy as np
import orjson
import pytest

pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("mlxtend")

from loopml.core.errors import Conflict, InvalidInput  # noqa: E402
from loopml.core.settings import Settings  # noqa: E402
from tests.process_support import wait_for  # noqa: E402
from tests.serving_support import Hammer  # noqa: E402
from tests.surface_support import cli_runner  # noqa: E402

CLEAN, INVERTED, FRESH, HAMMER_POOL = 300, 1200, 300, 200
MIN_LABELS = 200


@pytest.fixture
def world(tmp_path, clean_env) -> Iterator[tuple[Any, Any]]:
    """(SDK client, Platform) of a real control plane on a free port (two jobs at once: a monitor
    run never queues behind a training)."""
    from loopml.api.app import create_app
    from loopml.platform import Platform
    from loopml.sdk.client import Client
    from tests.asgi_server import serve_asgi

    settings = Settings(home=tmp_path / "home", port=0, serving_port=0, token=None, reconcile_interval_s=0.2,
                        max_concurrent_jobs=2)
    with serve_asgi(create_app(settings, start_loop=True)) as url:
        client = Client(url, token="", timeout=60)
        plat = Platform(settings)  # the test's own reader of the same stores (splits, capture)
        try:
            yield client, plat
        finally:
            plat.close()
            client.close()


def invert(images: np.ndarray) -> np.ndarray:
    return (255 - images.astype(np.int16)).astype(np.uint8)


def send_all(client: Any, images: np.ndarray, ids: list[str]) -> None:
    """One request per image, each with its inference id, a few at a time; every one must succeed."""
    def one(k: int) -> str:
        return client.invoke("mnist", instances=[images[k].tolist()], inference_id=ids[k])["predictions"][0]["label"]

    with ThreadPoolExecutor(4) as pool:
        labels = list(pool.map(one, range(len(ids))))
    assert len(labels) == len(ids)


def wait_captured(plat: Any, ids: list[str], timeout: float = 60) -> None:
    """Until every id is in the capture store, and the newest is older than a run's settle time
    (a run reads up to now − CAPTURE_SETTLE_S: records still in flight are left to the next one)."""
    from loopml.core.timeutil import utcnow
    from loopml.monitoring.capture_reader import read_window
    from loopml.monitoring.run import CAPTURE_SETTLE_S

    wanted = set(ids)

    def landed() -> Any:
        window = read_window(plat.artifacts, plat.settings.capture_prefix, "mnist", None, since=None, until=None,
                             columns=("inference_ids", "inference_times"))
        return window if wanted <= {str(i) for i in window.inference_ids if i} else None

    window = wait_for(landed, timeout, poll=0.5, what=f"{len(ids)} captured requests")
    settle = (window.last_time - utcnow()).total_seconds() + CAPTURE_SETTLE_S + 0.5
    if settle > 0:
        time.sleep(settle)


def run_monitor(client: Any) -> dict[str, Any]:
    run = client.run_monitor("mnist-mon", wait=True, timeout=300)
    assert run["status"] == "succeeded", run
    for f in (run.get("summary") or {}).get("features") or []:  # shown when an assertion fails
        print(f"run {run['id']}: {f['name']} {f['statistics']} thresholds {f['thresholds']} "
              f"n {f['n_baseline']}/{f['n_current']} {'VIOLATED' if f['violated'] else 'ok'}")
    return run


def history_states(client: Any, execution_id: str) -> list[dict[str, Any]]:
    return client.execution_history(execution_id)


class CyclingHammer(Hammer):
    """Hammer sending a different (inverted, never-trained-on) image each time, lightly paced:
    its requests land in the capture the final monitor run reads, so they must look like real
    traffic, not one image repeated a thousand times."""

    def __init__(self, url: str, bodies: list[bytes], threads: int = 2) -> None:
        super().__init__(url, bodies[0], threads=threads)
        self.bodies = bodies
        self._next = 0

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set():
                with self._lock:
                    body = self.bodies[self._next % len(self.bodies)]
                    self._next += 1
                try:
                    r = client.post(self.url, content=body, headers=self.headers)
                    with self._lock:
                        self.codes.append(r.status_code)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.02)


def serves(client: Any, version: int) -> bool:
    record = client.endpoint("mnist")
    variants = (record.get("resolved") or {}).get("variants") or []
    return bool(record["ready"]) and [v["version"] for v in variants] == [version]


def test_drift_alert_retrains_on_labelled_traffic_promotes_and_the_drift_is_gone(world, monkeypatch):
    from loopml.datasets.service import load_version

    c, plat = world

    # -- a) the production setup ------------------------------------------------------------------
    c.add_dataset("mnist", "sample:mnist")
    job = c.wait(c.train("mnist", model="cnn", params={"epochs": 2, "batch_size": 64},
                         register_as="mnist-cnn")["id"], timeout=600)
    assert job["status"] == "succeeded", job["reason"]
    assert job["result"]["baseline"] is True  # the baseline was computed at registration
    c.set_alias("mnist-cnn", "production", 1)
    c.create_endpoint("mnist", model="mnist-cnn@production", capture_percent=100, wait=True, timeout=300)
    c.create_monitor("mnist-mon", "mnist", window="1h", min_samples=200)
    c.create_workflow("retrain-mnist", template="retrain", template_params={
        "dataset": "mnist-live", "model": "cnn", "endpoint": "mnist", "monitor": "mnist-mon",
        "min_labels": MIN_LABELS, "label_retry_s": 1, "epochs": 3, "min_improvement": 0.02})
    c.create_trigger("retrain-on-drift", alert="mnist-mon", workflow="retrain-mnist")

    content, splits = load_version(plat, plat.datasets.get("mnist", 1))
    images, labels = content.images, [str(v) for v in content.labels]
    clean_rows = splits["test"][:CLEAN]  # held out: the model never saw them
    inverted_rows = splits["train"][:INVERTED]
    hammer_rows = splits["train"][INVERTED:INVERTED + HAMMER_POOL]
    fresh_rows = splits["validation"][:FRESH]

    # -- b) clean traffic: no drift, no alert ----------------------------------------------------------
    clean_ids = [f"clean-{k}" for k in range(CLEAN)]
    send_all(c, images[clean_rows], clean_ids)
    wait_captured(plat, clean_ids)
    clean_run = run_monitor(c)
    assert clean_run["rows"] >= CLEAN, clean_run
    assert clean_run["violations"] == [], clean_run["violations"]
    assert c.alerts(monitor="mnist-mon") == []
    assert c.executions(workflow="retrain-mnist") == []

    # -- c) inverted digits: drift → alerts → ONE retraining execution, waiting for labels ----------------
    inverted_ids = [f"inv-{k}" for k in range(INVERTED)]
    send_all(c, invert(images[inverted_rows]), inverted_ids)
    wait_captured(plat, inverted_ids)
    shifted = run_monitor(c)
    assert shifted["rows"] >= INVERTED
    drifted = {v["key"] for v in shifted["violations"]}
    assert {"mean_intensity", "ink_fraction"} <= drifted, drifted
    open_alerts = c.alerts(open=True, monitor="mnist-mon")
    assert {a["key"] for a in open_alerts} == drifted
    # several features drifted together: the trigger started one execution, not one per alert
    [execution] = wait_for(lambda: c.executions(workflow="retrain-mnist") or None, 30, poll=0.3,
                           what="the execution started by the alert trigger")
    assert execution["source"] == "trigger:retrain-on-drift"
    with pytest.raises(Conflict, match=r"0 labelled requests, 200 needed"):
        c.labelled_dataset("mnist-mon", "mnist-live", min_labels=MIN_LABELS)
    with pytest.raises(InvalidInput, match="min_labels"):
        c.labelled_dataset("mnist-mon", "mnist-live", min_labels=0)

    def waiting_for_labels() -> bool:
        return sum(1 for e in history_states(c, execution["id"]) if e["state"] == "CollectLabelled"
                   and "Monitor.NotEnoughLabels" in orjson.dumps(e.get("details")).decode()) >= 2

    wait_for(waiting_for_labels, 60, poll=0.5, what="CollectLabelled retrying on Monitor.NotEnoughLabels")
    assert c.execution(execution["id"])["status"] == "RUNNING"
    assert c.jobs(status=None) and not any(j["kind"] == "train" and j["status"] != "succeeded"
                                           for j in c.jobs(status=None))  # nothing trains before labels

    # -- d) labels arrive → dataset → train → evaluate → promote → rollout, under load ----------------
    truth = [{"inference_id": i, "label": labels[int(r)]} for i, r in zip(inverted_ids, inverted_rows)]
    uploaded = c.upload_labels("mnist-mon", truth)
    assert uploaded["stored"] == INVERTED and uploaded["unknown_ids"]["count"] == 0

    def reached(state: str) -> bool:
        events = history_states(c, execution["id"])
        if c.execution(execution["id"])["status"] != "RUNNING":
            raise AssertionError(f"execution ended before {state}: {c.execution(execution['id'])}")
        return any(e["state"] == state for e in events)

    wait_for(lambda: reached("Evaluate"), 400, poll=0.5, what="the execution to reach Evaluate")
    assert serves(c, 1)
    url = c.endpoint("mnist")["url"]
    bodies = [orjson.dumps({"instances": [img.tolist()]}) for img in invert(images[hammer_rows])]
    with CyclingHammer(url, bodies) as hammer:
        done = c.wait_execution(execution["id"], timeout=400)
        assert done["status"] == "SUCCEEDED", (done.get("error"), done.get("cause"))
        wait_for(lambda: serves(c, 2), 120, poll=0.2, what="the endpoint serving mnist-cnn:2")
        seen = len(hammer.codes)
        wait_for(lambda: len(hammer.codes) >= seen + 20, 60, poll=0.1, what="requests after the switch")
    assert hammer.errors == [] and len(hammer.codes) > 50
    assert set(hammer.codes) == {200}, {code: hammer.codes.count(code) for code in set(hammer.codes)}

    output = done["output"]
    assert output["promoted"] is True and output["ref"] == "mnist-cnn:2", output
    live = c.dataset_versions("mnist-live")
    assert [v["ref"] for v in live] == ["mnist-live:1"] and live[0]["rows"] == INVERTED
    assert output["dataset"] == "mnist-live:1"
    assert "challenger" in output["reason"] or output["improvement"] >= 0.02, output
    assert c.model_alias("mnist-cnn", "production")["version"] == 2
    # the labelled requests are in mnist-live:1 already: nothing new to add (CLI: one line, exit 2)
    cli = cli_runner(c.url, monkeypatch)
    again = cli("monitors", "dataset", "mnist-mon", "--dataset", "mnist-live", "--min-labels", "1")
    assert again.exit_code == 2, again.output
    assert "0 labelled requests, 1 needed (1200 already in dataset left out)" in again.output
    assert len(again.output.strip().splitlines()) == 1
    # … or as a dataset of their own
    own = cli("monitors", "dataset", "mnist-mon", "--dataset", "inverted", "--no-extend", "--json")
    assert own.exit_code == 0, own.output
    record = orjson.loads(own.output)
    assert (record["ref"], record["rows"], record["labelled"], record["created"]) == ("inverted:1", INVERTED,
                                                                                      INVERTED, True)
    assert sorted(record["schema"]["classes"]) == [str(d) for d in range(10)]
    missing = httpx.post(f"{c.url}/monitors/nope/dataset", json={"dataset": "x"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = httpx.post(f"{c.url}/monitors/mnist-mon/dataset", json={"dataset": "Not A Name"})
    assert bad.status_code == 400 and "dataset name" in bad.json()["message"], bad.text

    # -- e) fresh inverted digits: no drift against the new version's baseline, alerts resolved ----------
    fresh_ids = [f"fresh-{k}" for k in range(FRESH)]
    send_all(c, invert(images[fresh_rows]), fresh_ids)
    wait_captured(plat, fresh_ids)
    recovered = run_monitor(c)
    assert recovered["summary"]["model"] == {"name": "mnist-cnn", "version": 2}
    assert recovered["rows"] >= FRESH
    assert recovered["violations"] == [], recovered["violations"]
    assert c.alerts(open=True, monitor="mnist-mon") == []
    assert {a["status"] for a in c.alerts(monitor="mnist-mon")} == {"resolved"}
    assert len(c.executions(workflow="retrain-mnist")) == 1
