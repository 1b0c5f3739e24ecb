"""Model monitors (issue 5), below the HTTP surface: the repository contract on SQLite and
PostgreSQL (one open alert per key, label upsert, run lifecycle), the service's validation,
alerts (open → dedupe → resolve; a webhook POST received by a real local HTTP server; an alert
trigger fired), and the scheduler under a fake clock."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Iterator

import pytest

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.store.db import MetadataStore
from loopml.store.monitors_repo import MonitorRepo
from tests.test_triggers import add_function


@pytest.fixture(autouse=True)
def loopback_webhooks(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' webhook receivers listen on 127.0.0.1: allow private addresses (refused by default)."""
    monkeypatch.setenv("LOOPML_WEBHOOK_ALLOW_PRIVATE", "1")

pytest_plugins = ("tests.backends",)


def add_endpoint(plat: Platform, name: str = "mnist", capture: float = 100.0, *, shadow: bool = False) -> dict:
    from loopml.serving.spec import normalise_spec, resolve_spec

    for version in (1, 2):
        try:
            plat.models.get("digits", version)
        except NotFound:
            plat.models.add_version("digits", version, job_id=None, dataset="digits:1", kind="image", template="cnn",
                                    hparams={}, metrics={}, lineage={}, runtimes=["keras"],
                                    artifact_prefix=f"models/digits/v{version}")
    raw: dict[str, Any] = {"model": "digits:1", "capture_percent": capture}
    if shadow:
        raw["shadow"] = "digits:2"
    spec = normalise_spec(raw)
    return plat.endpoints.create(name, spec, resolve_spec(spec, lambda m, v, a: plat.models.get(m, v, a)))


def make_monitor(repo: MonitorRepo, name: str = "m", **fields: Any) -> dict:
    args: dict[str, Any] = dict(endpoint="mnist", variant=None, schedule=None, tz="UTC", window_s=3600,
                                min_samples=10, thresholds={}, webhooks=[], next_run_at=None)
    args.update(fields)
    return repo.create(name, **args)


def violation(key: str, value: float = 0.5) -> dict:
    return {"key": key, "severity": "warning", "statistic": {"statistics": {"psi": value}}, "message": f"{key} drifted"}


# -- repository contract (SQLite + PostgreSQL) -------------------------------------------------------

def test_repo_monitor_and_run_lifecycle(metadata_store: MetadataStore):
    repo = MonitorRepo(metadata_store)
    created = make_monitor(repo, thresholds={"psi": 0.3}, webhooks=["http://127.0.0.1:9/x"])
    assert (created["status"], created["cursor"], created["thresholds"]) == ("active", None, {"psi": 0.3})
    with pytest.raises(Conflict):
        make_monitor(repo)
    with pytest.raises(NotFound, match="monitor 'nope' not found"):
        repo.get("nope")

    run, job = repo.create_run("m")
    assert (run["status"], run["job_id"], job["kind"], job["status"]) == ("queued", job["id"], "monitor", "queued")
    assert job["spec"] == {"monitor": "m", "run_id": run["id"]}
    with pytest.raises(Conflict, match="run in progress"):
        repo.create_run("m")  # one at a time: two runs would read the same window

    since = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    assert repo.start_run(run["id"], since=since, until=since + timedelta(hours=1))
    cursor = since + timedelta(minutes=59)
    done = repo.finish_run(run["id"], "succeeded", rows=300, malformed=2, violations=[{"key": "psi"}],
                           summary={"checked": ["x"]}, report_key="monitoring/m/r/report.json", cursor=cursor)
    assert (done["status"], done["rows"], done["malformed"], done["since"]) == ("succeeded", 300, 2, "2026-11-27T10:00:00Z")
    assert repo.get("m")["cursor"] == "2026-11-27T10:59:00Z"
    # an older cursor never moves it back
    run2, _ = repo.create_run("m")
    repo.finish_run(run2["id"], "succeeded", cursor=since)
    assert repo.get("m")["cursor"] == "2026-11-27T10:59:00Z"
    assert [r["id"] for r in repo.runs("m")] == [run2["id"], run["id"]]
    assert repo.update_summary(run["id"], {"alerts": {"opened": []}})["summary"] == {"checked": ["x"], "alerts": {"opened": []}}
    with pytest.raises(NotFound):
        repo.get_run("other", run["id"])

    repo.delete("m")
    with pytest.raises(NotFound):
        repo.run_by_id(run["id"])


def test_repo_orphaned_runs_fail_with_their_job_reason(metadata_store: MetadataStore):
    from loopml.core.jobstatus import FAILED, QUEUED, RUNNING
    from loopml.store.jobs_repo import JobRepo

    repo, jobs = MonitorRepo(metadata_store), JobRepo(metadata_store)
    make_monitor(repo)
    run, job = repo.create_run("m")
    assert repo.fail_orphaned_runs() == []  # its job is only queued
    jobs.transition(job["id"], RUNNING, expect=[QUEUED])
    jobs.transition(job["id"], FAILED, expect=[RUNNING], reason="worker killed")
    assert repo.fail_orphaned_runs() == [run["id"]]
    failed = repo.get_run("m", run["id"])
    assert failed["status"] == "failed" and "worker killed" in failed["error"]
    repo.create_run("m")  # no longer blocked


def test_repo_labels_upsert(metadata_store: MetadataStore):
    repo = MonitorRepo(metadata_store)
    make_monitor(repo)
    assert repo.upsert_labels("m", [("a", "1"), ("b", "2"), ("a", "3")]) == 2  # the last label of a repeated id wins
    assert repo.labels_for("m", ["a", "b", "zz"]) == {"a": "3", "b": "2"}
    assert repo.upsert_labels("m", [("b", "7")] + [(f"id-{i}", str(i % 10)) for i in range(1200)]) == 1201
    assert repo.labels_for("m", ["b"]) == {"b": "7"}  # a re-upload replaces
    assert repo.count_labels("m") == 1202
    assert len(repo.labels_for("m", [f"id-{i}" for i in range(1200)])) == 1200  # chunked IN queries
    with pytest.raises(NotFound):
        repo.upsert_labels("nope", [("a", "1")])


def test_repo_one_open_alert_per_key(metadata_store: MetadataStore):
    repo = MonitorRepo(metadata_store)
    make_monitor(repo)
    first = repo.record_alerts("m", "run-1", [violation("pixel"), violation("classes")])
    assert sorted(a["key"] for a in first["opened"]) == ["classes", "pixel"] and not first["updated"]
    second = repo.record_alerts("m", "run-2", [violation("pixel", 0.9)], checked=["pixel", "classes"])
    assert [a["key"] for a in second["updated"]] == ["pixel"] and not second["opened"]
    assert [a["key"] for a in second["resolved"]] == ["classes"]
    pixel = repo.alert(second["updated"][0]["id"])
    assert (pixel["count"], pixel["run_id"], pixel["status"]) == (2, "run-2", "open")
    assert pixel["statistic"]["statistics"]["psi"] == 0.9
    # a key not checked by a run (e.g. accuracy without labels) stays open
    third = repo.record_alerts("m", "run-3", [], checked=["classes"])
    assert not third["resolved"] and repo.alert(pixel["id"])["status"] == "open"
    # resolved, then violated again: a NEW alert (the old one keeps its history)
    repo.record_alerts("m", "run-4", [])
    reopened = repo.record_alerts("m", "run-5", [violation("pixel")])["opened"][0]
    assert reopened["id"] != pixel["id"] and repo.alert(pixel["id"])["status"] == "resolved"
    open_pixels = [a for a in repo.alerts(open=True, monitor="m") if a["key"] == "pixel"]
    assert len(open_pixels) == 1
    assert {a["status"] for a in repo.alerts(monitor="m")} == {"open", "resolved"}
    assert len(repo.alerts(open=False)) == 2
    repo.set_notifications(reopened["id"], [{"url": "http://x", "ok": False}])
    assert repo.alert(reopened["id"])["notifications"] == [{"url": "http://x", "ok": False}]


def test_repo_concurrent_alert_writers_keep_one_open_alert(metadata_store: MetadataStore):
    repo = MonitorRepo(metadata_store)
    make_monitor(repo)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            repo.record_alerts("m", f"run-{i}", [violation("pixel")], checked=[])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    [alert] = repo.alerts(open=True, monitor="m")
    assert alert["count"] == 6


# -- service validation ------------------------------------------------------------------------

@pytest.fixture
def plat(settings: Settings) -> Iterator[Platform]:
    p = Platform(settings)
    yield p
    p.close()


def test_create_validates_everything_up_front(plat: Platform):
    from loopml.monitoring import monitors

    add_endpoint(plat, "mnist")
    add_endpoint(plat, "quiet", capture=0)
    with pytest.raises(NotFound, match="endpoint 'nope' not found"):
        monitors.create_monitor(plat, "m", "nope")
    with pytest.raises(InvalidInput, match=r"endpoint quiet captures no traffic: `loopml endpoints update quiet --capture 100` first"):
        monitors.create_monitor(plat, "m", "quiet")
    with pytest.raises(InvalidInput, match="has no variant 'blue'"):
        monitors.create_monitor(plat, "m", "mnist", variant="blue")
    with pytest.raises(InvalidInput, match="threshold 'pssi' is not known; use one of shift, js_distance"):
        monitors.create_monitor(plat, "m", "mnist", thresholds=["pssi=0.2"])
    for bad in (["psi"], ["psi=abc"], ["ks_pvalue=2"], ["accuracy=1.5"], ["psi=-1"], ["psi=nan"]):
        with pytest.raises(InvalidInput, match="threshold"):
            monitors.create_monitor(plat, "m", "mnist", thresholds=bad)
    for bad in ("1x", "0m", "", "100d", "-1h"):
        with pytest.raises(InvalidInput, match="window"):
            monitors.create_monitor(plat, "m", "mnist", window=bad)
    with pytest.raises(InvalidInput, match="cron"):
        monitors.create_monitor(plat, "m", "mnist", schedule="every minute")
    with pytest.raises(InvalidInput, match="tz"):
        monitors.create_monitor(plat, "m", "mnist", schedule="*/5 * * * *", tz="Mars/Olympus")
    with pytest.raises(InvalidInput, match="webhook"):
        monitors.create_monitor(plat, "m", "mnist", webhooks=["ftp://x/y"])
    with pytest.raises(InvalidInput, match="min_samples"):
        monitors.create_monitor(plat, "m", "mnist", min_samples=0)
    with pytest.raises(InvalidInput, match="name"):
        monitors.create_monitor(plat, "bad name!", "mnist")
    assert plat.monitors.list() == []  # nothing half-written

    now = datetime(2026, 11, 27, 10, 2, tzinfo=timezone.utc)
    record = monitors.create_monitor(plat, "m", "mnist", schedule="*/5 * * * *", tz="Europe/Paris", window="30m",
                                    thresholds=["psi=0.3", "accuracy=0.9", "min_samples=50"],
                                    webhooks=["https://hooks.example/a"], now=lambda: now)
    assert (record["window_s"], record["window"], record["tz"]) == (1800, "30m", "Europe/Paris")
    assert record["thresholds"] == {"psi": 0.3, "accuracy": 0.9, "min_samples": 50}
    assert record["next_run_at"] == "2026-11-27T10:05:00Z"
    paused = monitors.pause_monitor(plat, "m")
    assert (paused["status"], paused["next_run_at"]) == ("paused", None)
    later = now + timedelta(hours=3)
    resumed = monitors.resume_monitor(plat, "m", now=lambda: later)
    assert (resumed["status"], resumed["next_run_at"]) == ("active", "2026-11-27T13:05:00Z")
    shown = monitors.get_monitor(plat, "m")
    assert shown["runs"] == [] and shown["alerts"] == [] and shown["labels"] == 0


def test_upload_labels_counts_bad_lines_and_unknown_ids(plat: Platform):
    from loopml.monitoring import labels, monitors
    from loopml.serving.capture import CaptureWriter

    add_endpoint(plat, "mnist")
    monitors.create_monitor(plat, "m", "mnist")
    with CaptureWriter(plat.artifacts, plat.settings.capture_prefix) as writer:
        for i in range(5):
            writer.record("mnist", "primary", input_body=b'{"instances": [[0]]}', input_content_type="application/json",
                          output_body=b'{"predictions": []}', inference_id=f"req-{i}", model="digits", model_version=1)
    csv_file = b"inference_id,label\nreq-0,3\nreq-1,4\nbroken-line\nghost-1,5\n,7\nreq-0,8\n"
    answer = labels.upload_labels(plat, "m", data=csv_file, filename="labels.csv")
    assert (answer["received"], answer["stored"], answer["invalid"]) == (6, 3, 2)
    assert answer["unknown_ids"] == {"count": 1, "first": ["ghost-1"]}
    assert plat.monitors.labels_for("m", ["req-0"]) == {"req-0": "8"}
    jsonl = b'{"inference_id": "req-2", "label": "1"}\nnot json\n{"inference_id": "req-3"}\n{"inference_id": "req-4", "label": 2}\n'
    answer = labels.upload_labels(plat, "m", data=jsonl, filename="labels.jsonl")
    assert (answer["stored"], answer["invalid"], answer["unknown_ids"]["count"], answer["labels"]) == (2, 2, 0, 5)
    answer = labels.upload_labels(plat, "m", rows=[{"inference_id": "req-1", "label": "9"}, "junk"])
    assert (answer["stored"], answer["invalid"]) == (1, 1)
    with pytest.raises(InvalidInput, match="header"):
        labels.upload_labels(plat, "m", data=b"a,b\n1,2\n", filename="x.csv")
    with pytest.raises(InvalidInput, match="no valid rows"):
        labels.upload_labels(plat, "m", data=b"not json at all {\n", format="jsonl")
    with pytest.raises(NotFound):
        labels.upload_labels(plat, "nope", rows=[{"inference_id": "a", "label": "b"}])


# -- alerts: dedupe, resolve, webhook, trigger ------------------------------------------------------

class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append({"path": self.path, "body": json.loads(body),
                                    "content_type": self.headers.get("Content-Type")})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def finished_run(plat: Platform, name: str, violations: list[dict], checked: list[str] | None = None) -> dict:
    run, _job = plat.monitors.create_run(name)
    return plat.monitors.finish_run(run["id"], "succeeded", rows=500, violations=violations,
                                    summary={"checked": checked if checked is not None else [v["key"] for v in violations]},
                                    report_key=f"monitoring/{name}/{run['id']}/report.json")


def test_alerts_open_dedupe_resolve_notify_and_fire_trigger(plat: Platform, hook_server):
    from loopml.monitoring import alerts, monitors
    from loopml.triggers import service as triggers

    url, hook = hook_server
    add_endpoint(plat, "mnist")
    add_function(plat.meta, "retrain")
    monitor = monitors.create_monitor(plat, "m", "mnist",
                                     webhooks=[f"{url}/alerts", "http://127.0.0.1:9/unreachable"])
    triggers.create_trigger(plat, "on-drift", "alert", monitor="m", function="retrain")  # the monitor exists
    drift = {"key": "mean_intensity", "name": "mean_intensity", "type": "numeric",
             "statistics": {"psi": 0.8, "ks_pvalue": 1e-12}, "thresholds": {"psi": 0.25, "ks_pvalue": 0.001},
             "violated": True, "n_baseline": 2000, "n_current": 500, "message": "drift in mean_intensity"}

    run1 = finished_run(plat, "m", [drift], checked=["mean_intensity", "contrast"])
    changes = alerts.process_run(plat, monitor, run1)
    [opened] = changes["opened"]
    assert (opened["key"], opened["count"], opened["status"]) == ("mean_intensity", 1, "open")
    assert opened["statistic"]["statistics"]["psi"] == 0.8 and opened["statistic"]["n_current"] == 500
    # the webhook got the alert JSON; the unreachable one is recorded as failed (2 tries), not raised
    [posted] = hook.received
    assert posted["path"] == "/alerts" and posted["content_type"] == "application/json"
    body = posted["body"]
    assert body["alert"]["id"] == opened["id"] and body["monitor"] == "m" and body["endpoint"] == "mnist"
    assert body["run"] == run1["id"] and body["report_url"].endswith(f"/monitors/m/runs/{run1['id']}/report.html")
    stored = plat.monitors.alert(opened["id"])
    by_target = {n.get("url") or n.get("trigger"): n for n in stored["notifications"]}
    assert by_target[f"{url}/alerts"]["ok"] is True
    assert by_target["http://127.0.0.1:9/unreachable"]["ok"] is False
    assert by_target["http://127.0.0.1:9/unreachable"]["attempts"] == 2
    assert by_target["on-drift"]["ok"] is True and by_target["on-drift"]["started_id"]
    [firing] = triggers.history(plat, "on-drift")
    assert firing["dedupe_key"] == opened["id"] and firing["event"]["alert"]["key"] == "mean_intensity"

    # seen again while open: deduplicated (count 2), no second notification or firing
    run2 = finished_run(plat, "m", [drift], checked=["mean_intensity"])
    changes = alerts.process_run(plat, monitor, run2)
    assert not changes["opened"] and [a["count"] for a in changes["updated"]] == [2]
    assert len(hook.received) == 1 and len(triggers.history(plat, "on-drift")) == 1

    # an insufficient run judges nothing
    run3, _ = plat.monitors.create_run("m")
    run3 = plat.monitors.finish_run(run3["id"], "insufficient", rows=3, violations=[], summary={"checked": []})
    assert alerts.process_run(plat, monitor, run3) == {"opened": [], "updated": [], "resolved": []}

    # recovered: resolved
    run4 = finished_run(plat, "m", [], checked=["mean_intensity", "contrast"])
    [resolved] = alerts.process_run(plat, monitor, run4)["resolved"]
    assert resolved["id"] == opened["id"] and resolved["status"] == "resolved" and resolved["resolved_at"]
    assert plat.monitors.alerts(open=True) == []


def test_webhook_failure_status_is_recorded(hook_server):
    from loopml.core.urlpolicy import URLPolicy
    from loopml.monitoring.alerts import post_webhook

    url, hook = hook_server
    hook.status = 500
    outcome = post_webhook(f"{url}/x", {"a": 1}, policy=URLPolicy(allow_private=True), sleep=lambda _s: None)
    assert (outcome["ok"], outcome["status"], outcome["attempts"], outcome["error"]) == (False, 500, 2, "HTTP 500")
    assert len(hook.received) == 2


# -- scheduler -------------------------------------------------------------------------------------

def test_scheduler_queues_due_runs_once_and_collapses_missed_times(plat: Platform):
    from loopml.controlplane.monitors import MonitorScheduler
    from loopml.monitoring import monitors
    from loopml.core.jobstatus import FAILED, QUEUED, RUNNING

    add_endpoint(plat, "mnist")
    clock = [datetime(2026, 11, 27, 10, 2, tzinfo=timezone.utc)]
    monitors.create_monitor(plat, "every5", "mnist", schedule="*/5 * * * *", now=lambda: clock[0])
    monitors.create_monitor(plat, "manual", "mnist", now=lambda: clock[0])
    scheduler = MonitorScheduler(plat, now=lambda: clock[0])

    assert scheduler.tick() == []  # 10:05 has not come
    clock[0] = datetime(2026, 11, 27, 10, 5, 1, tzinfo=timezone.utc)
    [run] = scheduler.tick()
    assert (run["monitor"], run["source"], run["status"]) == ("every5", "schedule", "queued")
    assert plat.jobs.get(run["job_id"])["spec"] == {"monitor": "every5", "run_id": run["id"]}
    assert plat.monitors.get("every5")["next_run_at"] == "2026-11-27T10:10:00Z"
    assert scheduler.tick() == []  # not due again yet

    # due while its run is still queued: no second run, the schedule moves on
    clock[0] = datetime(2026, 11, 27, 10, 10, 30, tzinfo=timezone.utc)
    assert scheduler.tick() == []
    assert plat.monitors.get("every5")["next_run_at"] == "2026-11-27T10:15:00Z"

    # the worker was killed: the orphaned run fails, and the monitor runs again
    plat.jobs.transition(run["job_id"], RUNNING, expect=[QUEUED])
    plat.jobs.transition(run["job_id"], FAILED, expect=[RUNNING], reason="killed")
    # a long outage (an hour of missed times) collapses into one run
    clock[0] = datetime(2026, 11, 27, 11, 17, tzinfo=timezone.utc)
    [again] = scheduler.tick()
    assert plat.monitors.get_run("every5", run["id"])["status"] == "failed"
    assert again["id"] != run["id"] and plat.monitors.get("every5")["next_run_at"] == "2026-11-27T11:20:00Z"
    assert [r["monitor"] for r in plat.monitors.runs("manual")] == []

    # paused monitors are not scheduled; resume restarts from now
    monitors.pause_monitor(plat, "every5")
    clock[0] = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    assert scheduler.tick() == []
    monitors.resume_monitor(plat, "every5", now=lambda: clock[0])
    assert plat.monitors.get("every5")["next_run_at"] == "2026-11-27T12:05:00Z"


# -- one real run: a trained digits CNN, real capture files, the run job called directly -------------

from tests.serving_support import digit_bundles, digits_data  # noqa: E402,F401 - session fixtures


def _capture(plat: Platform, bundle, images, start: float, prefix: str = "req") -> None:
    from loopml.serving.capture import CaptureWriter
    from loopml.serving.codecs import encode_predictions

    proba = bundle.predict_proba(images[..., None] if images.ndim == 3 else images)
    with CaptureWriter(plat.artifacts, plat.settings.capture_prefix) as writer:
        for i, image in enumerate(images):
            writer.record("mnist", "primary", input_body=json.dumps({"instances": [image.tolist()]}).encode(),
                          input_content_type="application/json",
                          output_body=encode_predictions(proba[i:i + 1], bundle.label_names),
                          inference_id=f"{prefix}-{i}", model="digits", model_version=1,
                          event_time=start + i * 0.05)
    # one truncated line, as a crashed writer could leave: counted and skipped
    plat.artifacts.put_bytes("capture/mnist/primary/" + time_folder(start) + "/broken.jsonl", b'{"captureData": {"endp')


def time_folder(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y/%m/%d/%H")


def test_a_real_run_finds_drift_raises_alerts_and_measures_quality(plat: Platform, digit_bundles, digits_data, tmp_path,
                                                                   monkeypatch):
    baseline_job = pytest.importorskip("loopml.monitoring.baseline_job")
    # one capture file per chunk: the run reads and decodes chunk by chunk and merges the rows
    monkeypatch.setattr("loopml.monitoring.run.FILES_PER_CHUNK", 1)
    import time as _time

    import numpy as np

    from loopml.models.bundle import load_bundle
    from loopml.models.embeddings import embed
    from loopml.monitoring import run as monitor_run
    from loopml.monitoring import labels, monitors
    from loopml.monitoring.profile import build_profile
    from tests.serving_support import register

    images, target = digits_data
    version = register(plat, "digits", digit_bundles[1])
    bundle = load_bundle(digit_bundles[1], runtime="onnx")
    # the baseline, as registration writes it: rows the traffic is drawn like, profiled with the
    # model's answers (digits is ordered by writer: contiguous blocks differ by ~0.15 std, which
    # is drift the rule is meant to see — so rows are drawn at random)
    order = np.random.default_rng(0).permutation(len(images))
    images, target = images[order], target[order]
    train = images[:1000]
    manifest = json.loads((digit_bundles[1] / "loopml.json").read_text())
    profile = build_profile(kind="image", raw=train[..., None], proba=bundle.predict_proba(train[..., None]),
                            class_names=bundle.label_names, schema=manifest)
    plat.artifacts.put_bytes(f"{version['artifact_prefix']}/baseline/profile.json", json.dumps(profile).encode())
    buf = __import__("io").BytesIO()
    np.save(buf, embed(digit_bundles[1], train[..., None], max_rows=500))
    plat.artifacts.put_bytes(f"{version['artifact_prefix']}/baseline/embeddings.npy", buf.getvalue())
    assert baseline_job.load_baseline(plat, plat.models.get("digits", 1))[0]["rows"] == profile["rows"]

    add_endpoint(plat, "mnist")  # serves digits:1 (the version just registered)
    monitors.create_monitor(plat, "m", "mnist", min_samples=100, thresholds=["accuracy=0.95"])
    now = _time.time()
    held_out = images[1000:1300]
    _capture(plat, bundle, held_out, now - 600)

    def run_once() -> dict:
        run, job = plat.monitors.create_run("m")
        return monitor_run.run(plat, {"id": None, "spec": job["spec"]})

    quiet = run_once()
    assert quiet["status"] == "succeeded", quiet
    assert quiet["rows"] == 300 and quiet["malformed"] == 1
    assert quiet["violations"] == [] and plat.monitors.alerts(open=True) == []
    # a baseline written before accuracy estimates: the run still works and says why there is none
    assert "predates accuracy estimates" in quiet["summary"]["estimate"]["reason"]
    assert "quality.estimated_accuracy" not in quiet["summary"]["checked"]
    assert plat.artifacts.exists(quiet["report_key"]) and plat.artifacts.exists(quiet["summary"]["report_html"])
    html = monitors.get_report(plat, "m", quiet["id"], "html").decode()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")

    # inverted images (ink ↔ background) and labels that disagree with the answers
    _capture(plat, bundle, 16.0 - images[1300:1600], now - 300, prefix="inv")
    labels.upload_labels(plat, "m", rows=[{"inference_id": f"inv-{i}", "label": str((int(t) + 1) % 10)}
                                           for i, t in enumerate(target[1300:1600])])
    drifted = run_once()
    assert drifted["status"] == "succeeded", drifted
    assert drifted["rows"] == 300  # only what arrived since the cursor
    keys = {v["key"] for v in drifted["violations"]}
    assert "quality.accuracy" in keys and len(keys) >= 2, keys
    assert drifted["summary"]["quality"]["n"] == 300
    opened = plat.monitors.alerts(open=True, monitor="m")
    assert {a["key"] for a in opened} == keys and all(a["count"] == 1 for a in opened)
    assert drifted["summary"]["alerts"]["opened"]

    insufficient = run_once()  # nothing new since the cursor
    assert insufficient["status"] == "insufficient" and insufficient["rows"] == 0
    assert {a["id"] for a in plat.monitors.alerts(open=True, monitor="m")} == {a["id"] for a in opened}

    # 40 clean images: fewer than min_samples and nothing decisive → insufficient, the cursor stays
    _capture(plat, bundle, images[1600:1640], now - 120, prefix="few")
    few = run_once()
    assert few["status"] == "insufficient" and few["rows"] == 40 and few["violations"] == []
    assert few["summary"]["early"] and few["summary"]["features"]
    # 40 more, inverted: the window (80 rows, still < 100) holds a decisive shift → an early verdict
    _capture(plat, bundle, 16.0 - images[1640:1680], now - 60, prefix="early")
    early = run_once()
    assert early["status"] == "succeeded" and early["rows"] == 80, early
    assert early["violations"] and all(v.get("early") for v in early["violations"]), early["violations"]
    assert {"mean_intensity", "ink_fraction"} <= {v["key"] for v in early["violations"]}


def test_a_run_estimates_accuracy_before_labels_and_alerts_below_the_floor(plat: Platform, digit_bundles,
                                                                           digits_data, capsys):
    """The baseline's calibration map (labelled rows through the real model) → every run estimates
    the window's accuracy from the served confidences; an interval wholly below the monitor's
    accuracy floor is a violation that opens an alert and fires the alert trigger; labels that
    pass the floor overrule the estimate and resolve it."""
    import time as _time

    import numpy as np

    from loopml.models.bundle import load_bundle
    from loopml.monitoring import labels, monitors
    from loopml.monitoring import run as monitor_run
    from loopml.monitoring.baseline_job import compute_baseline
    from loopml.triggers import service as triggers
    from tests.serving_support import register

    images, target = digits_data
    order = np.random.default_rng(0).permutation(len(images))  # digits is ordered by writer: draw at random
    images, target = images[order], target[order]
    folder = digit_bundles[1]
    version = register(plat, "digits", folder)
    bundle = load_bundle(folder, runtime="onnx")
    truth = np.array([str(t) for t in target], dtype=object)
    profile, _ = compute_baseline(kind="image", raw=images[:1000][..., None], schema=json.loads(
        (folder / "loopml.json").read_text()), class_names=bundle.label_names, predict_proba=bundle.predict_proba,
        embed_rows=None, labels=truth[:1000])
    assert profile["calibration"]["n"] == 1000 and "calibrated on 1000" in profile["source"]["calibration"]
    plat.artifacts.put_bytes(f"{version['artifact_prefix']}/baseline/profile.json", json.dumps(profile).encode())

    add_endpoint(plat, "mnist")
    add_function(plat.meta, "retrain")
    now = _time.time()
    window = images[1000:1300]
    _capture(plat, bundle, window, now - 600)
    answers = np.asarray(bundle.label_names, dtype=object)[bundle.predict_proba(window[..., None]).argmax(axis=1)]
    measured = float(np.mean(answers == truth[1000:1300]))

    def run_once(name: str) -> dict:
        run, job = plat.monitors.create_run(name)
        return monitor_run.run(plat, {"id": None, "spec": job["spec"]})

    def quality_keys(items: list[dict]) -> list[str]:  # drift findings are not this test's business
        return [i["key"] for i in items if i["key"].startswith("quality.")]

    monitors.create_monitor(plat, "plain", "mnist", min_samples=100)  # no accuracy floor: estimated, not judged
    plain = run_once("plain")
    estimate = plain["summary"]["estimate"]
    assert plain["status"] == "succeeded" and quality_keys(plain["violations"]) == []
    assert estimate["n"] == 300 and estimate["low"] <= estimate["accuracy"] <= estimate["high"] < 1
    assert abs(estimate["accuracy"] - measured) < 0.1, (estimate, measured)
    assert "quality.estimated_accuracy" not in plain["summary"]["checked"] and "floor" not in estimate
    report = json.loads(plat.artifacts.get_bytes(plain["report_key"]))
    assert report["estimate"]["accuracy"] == estimate["accuracy"] and report["estimate"]["calibrated_rows"] == 1000
    assert "Estimated accuracy" in monitors.get_report(plat, "plain", plain["id"], "html").decode()
    assert f"accuracy estimate {estimate['accuracy']:.3f} [" in capsys.readouterr().out  # the job's log

    floor = round((estimate["high"] + 1) / 2, 4)
    monitors.create_monitor(plat, "floor", "mnist", min_samples=100, thresholds=[f"accuracy={floor}"])
    triggers.create_trigger(plat, "on-low", "alert", monitor="floor", function="retrain")
    low = run_once("floor")
    [violation] = [v for v in low["violations"] if v["key"] in quality_keys(low["violations"])]
    assert (violation["key"], violation["type"], violation["violated"]) == ("quality.estimated_accuracy", "quality", True)
    assert violation["thresholds"] == {"accuracy": floor} and violation["statistics"]["high"] < floor
    assert low["summary"]["estimate"]["violated"] is True
    [alert] = [a for a in plat.monitors.alerts(open=True, monitor="floor") if a["key"].startswith("quality.")]
    assert alert["key"] == "quality.estimated_accuracy" and "estimated accuracy" in alert["message"]
    [firing] = triggers.history(plat, "on-low")  # the retraining trigger fires on it like on any alert
    event = firing["event"]["alert"]
    assert "quality.estimated_accuracy" in [event["key"]] + [a["key"] for a in event.get("opened_with") or []]

    # new traffic whose labels agree with every answer: measured accuracy 1.0 passes the floor, the
    # estimate (still below it) is overruled, and the alert resolves
    _capture(plat, bundle, images[1300:1600], now - 300, prefix="agree")
    agree = np.asarray(bundle.label_names, dtype=object)[bundle.predict_proba(images[1300:1600][..., None]).argmax(1)]
    labels.upload_labels(plat, "floor", rows=[{"inference_id": f"agree-{i}", "label": str(p)} for i, p in enumerate(agree)])
    agreed = run_once("floor")
    summary = agreed["summary"]
    assert quality_keys(agreed["violations"]) == [] and summary["quality"]["accuracy"] == 1.0
    assert summary["quality"]["estimate"]["high"] < floor  # the estimate on the same labelled rows, beside it
    assert summary["estimate"]["overruled"] is True and summary["estimate"]["violated"] is False
    assert {"quality.accuracy", "quality.estimated_accuracy"} <= set(summary["checked"])
    assert quality_keys(plat.monitors.alerts(open=True, monitor="floor")) == []
    assert [f"{alert['id']} quality.estimated_accuracy"] == summary["alerts"]["resolved"]
    report = json.loads(plat.artifacts.get_bytes(agreed["report_key"]))
    assert sum(w["n"] for w in report["quality_windows"]) == 300 and all("estimate" in w for w in report["quality_windows"])
    assert len(triggers.history(plat, "on-low")) == 1


def test_a_baseline_on_the_training_split_calibrates_on_the_held_out_rows(digit_bundles, digits_data):
    """Too few held-out rows to profile: the training split is profiled, but the map is still fit
    on held-out rows (a model is right more often on rows it learnt) — or there is none."""
    import numpy as np

    from loopml.datasets.content import DatasetContent, raw_inputs
    from loopml.models.bundle import load_bundle
    from loopml.monitoring.baseline_job import baseline_rows, calibration_args, compute_baseline

    images, target = digits_data
    bundle = load_bundle(digit_bundles[0], runtime="onnx")
    content = DatasetContent(kind="image", images=images[:600, ..., None],
                             labels=np.array([str(t) for t in target[:600]], dtype=object))
    for held_out, calibrated in ((100, 100), (30, None)):
        splits = {"train": np.arange(600 - held_out), "validation": np.arange(600 - held_out, 600 - held_out // 2),
                  "test": np.arange(600 - held_out // 2, 600)}
        rows, split = baseline_rows(content, splits)
        assert split == "train"
        profile, _ = compute_baseline(kind="image", raw=raw_inputs(rows), schema={}, class_names=bundle.label_names,
                                      predict_proba=bundle.predict_proba, embed_rows=None,
                                      **calibration_args(content, splits, rows, split))
        assert profile["rows"] == 600 - held_out
        assert (profile["calibration"] or {}).get("n") == calibrated, profile["source"]["calibration"]
    assert profile["source"]["calibration"] == "no calibration: 30 labelled held-out rows < 50"


def test_chunks_of_a_window_merge_into_one_decoded_window() -> None:
    import numpy as np
    import pandas as pd

    from loopml.monitoring.decode import Decoded
    from loopml.monitoring.run import _merge_decoded

    a = Decoded(raw=pd.DataFrame({"x": [1.0, 2.0]}), proba=None, predicted=["a", "b"],
                confidence=np.array([0.9, 0.8]), keep=np.array([0, 1]), undecodable=1)
    empty = Decoded(raw=pd.DataFrame({"x": []}), proba=None, predicted=[], confidence=np.array([]),
                    keep=np.array([], dtype=np.int64), undecodable=2)
    b = Decoded(raw=pd.DataFrame({"x": [3.0]}), proba=None, predicted=["c"], confidence=np.array([0.7]),
                keep=np.array([0]), undecodable=0)
    merged = _merge_decoded([(a, 0), (empty, 3), (b, 3)])  # the first chunk held 3 records (one undecodable)
    assert merged.raw["x"].tolist() == [1.0, 2.0, 3.0]
    assert merged.predicted == ["a", "b", "c"] and merged.confidence.tolist() == [0.9, 0.8, 0.7]
    assert merged.keep.tolist() == [0, 1, 3] and merged.undecodable == 3
    images = _merge_decoded([(dataclasses_replace(a, raw=np.zeros((2, 2, 2, 1))), 0),
                             (dataclasses_replace(b, raw=np.ones((1, 2, 2, 1))), 2)])
    assert images.raw.shape == (3, 2, 2, 1) and images.keep.tolist() == [0, 1, 2]


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_bad_webhook_urls_and_nul_labels_are_input_errors(plat: Platform):
    """Review fixes: urlsplit raised ValueError ('http://[::1', a port out of range) → a 500; a NUL in
    an inference id or label reached PostgreSQL's text column → a 500. Both are the user's mistake."""
    from loopml.monitoring import labels, monitors

    add_endpoint(plat, "mnist")
    for bad in ("http://[::1", "http://hooks.example:99999/a", "http://hooks.example:0/a"):
        with pytest.raises(InvalidInput, match="webhook"):
            monitors.create_monitor(plat, "m", "mnist", webhooks=[bad])
    assert plat.monitors.list() == []
    record = monitors.create_monitor(plat, "m", "mnist", webhooks=["http://[::1]:8080/hook"])
    assert record["webhooks"] == ["http://[::1]:8080/hook"]
    rows = [{"inference_id": "a\x00b", "label": "1"}, {"inference_id": "c", "label": "1\x00"},
            {"inference_id": "d", "label": "2"}]
    answer = labels.upload_labels(plat, "m", rows=rows)
    assert (answer["stored"], answer["invalid"]) == (1, 2)
    with pytest.raises(InvalidInput, match="no valid rows"):
        labels.upload_labels(plat, "m", data=b"inference_id,label\nx\x00,1\n", filename="l.csv")
