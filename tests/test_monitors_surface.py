"""The surface of model monitors and alerts: REST (/monitors, /alerts), SDK and `loopml monitors` /
`loopml alerts`, over a real control plane (``live_server``: uvicorn + ControlLoop + real workers).

Model versions and the endpoint are written straight into the store (no training): a run queued
here goes through the real job path (dispatch → worker → monitoring.run) and fails with a recorded
reason (the version has no bundle/baseline), which is asserted too. Findings of a real run are
tested in tests/test_monitors.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.sdk.client import Client
from tests.test_cli import ok_json, one_line_error
from tests.test_monitors import add_endpoint
from tests.surface_support import assert_error, cli_runner


@pytest.fixture(autouse=True)
def loopback_webhooks(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' webhook receivers listen on 127.0.0.1: allow private addresses (refused by default)."""
    monkeypatch.setenv("LOOPML_WEBHOOK_ALLOW_PRIVATE", "1")


@pytest.fixture
def plat(live_server, settings):
    from loopml.platform import Platform

    p = Platform(settings)
    add_endpoint(p, "mnist")
    add_endpoint(p, "quiet", capture=0)
    yield p
    p.close()


@pytest.fixture
def api(live_server, plat):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        yield http


@pytest.fixture
def sdk(live_server, plat):
    with Client(live_server, token="") as c:
        yield c


@pytest.fixture
def cli(live_server, plat, monkeypatch):
    return cli_runner(live_server, monkeypatch)


def write_report(plat, name: str) -> dict:
    """A finished run with a report, as a worker would leave it."""
    run, _job = plat.monitors.create_run(name)
    key = f"monitoring/{name}/{run['id']}/report.json"
    plat.artifacts.put_bytes(key, json.dumps({"monitor": name, "rows": 500}).encode())
    plat.artifacts.put_bytes(key[:-4] + "html", b"<!DOCTYPE html><html><body>report</body></html>")
    estimate = {"accuracy": 0.912, "low": 0.88, "high": 0.94, "level": 0.95, "n": 500}
    return plat.monitors.finish_run(run["id"], "succeeded", rows=500, violations=[],
                                    summary={"checked": [], "estimate": estimate}, report_key=key)


def wait_run(api: httpx.Client, name: str, run_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/monitors/{name}/runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.3)


# ----------------------------------------------------------------------------- REST


def test_rest_create_read_pause_resume_delete_and_errors(api: httpx.Client):
    created = api.post("/monitors", json={"name": "m", "endpoint": "mnist", "schedule": "*/5 * * * *",
                                          "window": "30m", "min_samples": 100, "thresholds": {"psi": 0.3},
                                          "webhooks": ["http://127.0.0.1:9/hook"]})
    assert created.status_code == 201, created.text
    rec = created.json()
    assert (rec["endpoint"], rec["window_s"], rec["window"], rec["status"]) == ("mnist", 1800, "30m", "active")
    assert rec["thresholds"] == {"psi": 0.3} and rec["next_run_at"]
    assert [m["name"] for m in api.get("/monitors").json()] == ["m"]
    shown = api.get("/monitors/m").json()
    assert shown["runs"] == [] and shown["alerts"] == [] and shown["labels"] == 0
    paused = api.post("/monitors/m/pause").json()
    assert (paused["status"], paused["next_run_at"]) == ("paused", None)
    resumed = api.post("/monitors/m/resume").json()
    assert resumed["status"] == "active" and resumed["next_run_at"]

    assert_error(api.post("/monitors", json={"name": "m", "endpoint": "mnist"}), 409, "conflict", "already exists")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "nope"}), 404, "not_found", "endpoint 'nope'")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "quiet"}), 400, "invalid_input",
                 "endpoint quiet captures no traffic: `loopml endpoints update quiet --capture 100` first")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "mnist", "thresholds": {"pval": 1}}),
                 400, "invalid_input", "threshold 'pval' is not known", "psi")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "mnist", "window": "soon"}),
                 400, "invalid_input", "window")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "mnist", "schedule": "61 * * * *"}),
                 400, "invalid_input", "cron")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "mnist", "variant": "blue"}),
                 400, "invalid_input", "no variant 'blue'")
    assert_error(api.post("/monitors", json={"name": "x", "endpoint": "mnist", "colour": "red"}),
                 400, "invalid_input", "colour")
    assert_error(api.post("/monitors", content=b'{"name": "x", "endpoint": "mnist", "min_samples": NaN}',
                          headers={"Content-Type": "application/json"}), 400, "invalid_input")
    for path in ("/monitors/nope", "/monitors/nope/runs"):
        assert_error(api.get(path), 404, "not_found", "monitor 'nope' not found")
    assert_error(api.post("/monitors/nope/runs"), 404, "not_found", "monitor 'nope'")
    assert_error(api.post("/monitors/nope/labels", json={"labels": [{"inference_id": "a", "label": "1"}]}),
                 404, "not_found")
    assert api.get("/monitors").json()[0]["name"] == "m"  # nothing half-written by the failures

    assert api.delete("/monitors/m").json() == {"deleted": "m"}
    assert_error(api.delete("/monitors/m"), 404, "not_found")


def test_rest_run_goes_through_a_real_worker_and_records_why_it_failed(api: httpx.Client, plat):
    api.post("/monitors", json={"name": "m", "endpoint": "mnist"}).raise_for_status()
    answer = api.post("/monitors/m/runs")
    assert answer.status_code == 201, answer.text
    run, job = answer.json()["run"], answer.json()["job"]
    assert (run["status"], job["kind"], job["spec"]) == ("queued", "monitor", {"monitor": "m", "run_id": run["id"]})
    done = wait_run(api, "m", run["id"])
    assert done["status"] == "failed" and done["error"]  # no bundle, no baseline: said, not a hang
    final = api.get(f"/jobs/{job['id']}").json()
    deadline = time.monotonic() + 60
    while final["status"] not in ("failed", "succeeded", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
        final = api.get(f"/jobs/{job['id']}").json()
    assert final["status"] == "failed"
    assert_error(api.get(f"/monitors/m/runs/{run['id']}/report"), 404, "not_found", "has no report", "failed")
    assert [r["id"] for r in api.get("/monitors/m/runs").json()] == [run["id"]]


def test_rest_labels_reports_and_alerts(api: httpx.Client, plat):
    api.post("/monitors", json={"name": "m", "endpoint": "mnist"}).raise_for_status()
    body = b"inference_id,label\nreq-1,3\nbad line without a comma\nreq-2,4\n"
    up = api.post("/monitors/m/labels", files={"file": ("labels.csv", body)})
    assert up.status_code == 200, up.text
    got = up.json()
    assert (got["stored"], got["invalid"], got["unknown_ids"]["count"]) == (2, 1, 2)
    assert got["unknown_ids"]["first"] == ["req-1", "req-2"]  # nothing captured yet
    as_json = api.post("/monitors/m/labels", json={"labels": [{"inference_id": "req-1", "label": "5"}]}).json()
    assert (as_json["stored"], as_json["labels"]) == (1, 2)
    jsonl = api.post("/monitors/m/labels", files={"file": ("l.jsonl", b'{"inference_id": "z", "label": "1"}\n{oops\n')},
                     data={"format": "jsonl"}).json()
    assert (jsonl["stored"], jsonl["invalid"]) == (1, 1)
    assert_error(api.post("/monitors/m/labels", json={"rows": []}), 400, "invalid_input", "labels")
    assert_error(api.post("/monitors/m/labels", files={"file": ("l.csv", b"id,y\n1,2\n")}), 400, "invalid_input",
                 "header")
    assert_error(api.post("/monitors/m/labels", files={"file": ("l.bin", b"\xff\xfe\x00bad")}), 400, "invalid_input")

    run = write_report(plat, "m")
    report = api.get(f"/monitors/m/runs/{run['id']}/report")
    assert report.status_code == 200 and report.json() == {"monitor": "m", "rows": 500}
    page = api.get(f"/monitors/m/runs/{run['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and b"report" in page.content
    assert api.get(f"/monitors/m/runs/{run['id']}/report", params={"format": "html"}).text == page.text
    assert_error(api.get(f"/monitors/m/runs/{run['id']}/report", params={"format": "pdf"}), 400, "invalid_input")
    assert_error(api.get("/monitors/m/runs/run-nope"), 404, "not_found", "run 'run-nope'")

    changes = plat.monitors.record_alerts("m", run["id"], [{"key": "pixel", "message": "pixel drifted",
                                                            "statistic": {"statistics": {"psi": 0.5}}}])
    alert_id = changes["opened"][0]["id"]
    assert [a["id"] for a in api.get("/alerts", params={"open": "true"}).json()] == [alert_id]
    assert api.get("/alerts", params={"open": "false"}).json() == []
    assert api.get("/alerts", params={"monitor": "other"}).json() == []
    assert api.get(f"/alerts/{alert_id}").json()["message"] == "pixel drifted"
    assert_error(api.get("/alerts/alert-nope"), 404, "not_found", "alert 'alert-nope'")
    assert api.get("/monitors").json()[0]["open_alerts"] == 1


# ----------------------------------------------------------------------------- SDK


def test_sdk_round_trip(sdk: Client, plat, tmp_path: Path):
    rec = sdk.create_monitor("m", "mnist", window="2h", thresholds=["psi=0.3"], webhooks=["https://example.com/h"])
    assert (rec["window_s"], rec["thresholds"], rec["webhooks"]) == (7200, {"psi": 0.3}, ["https://example.com/h"])
    with pytest.raises(NotFound):
        sdk.create_monitor("x", "nope")
    with pytest.raises(InvalidInput, match="captures no traffic"):
        sdk.create_monitor("x", "quiet")
    with pytest.raises(Conflict):
        sdk.create_monitor("m", "mnist")
    assert [m["name"] for m in sdk.monitors()] == ["m"]
    assert sdk.pause_monitor("m")["status"] == "paused" and sdk.resume_monitor("m")["status"] == "active"

    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"inference_id": "a", "label": "1"}\nbroken\n')
    assert sdk.upload_labels("m", labels)["stored"] == 1
    assert sdk.upload_labels("m", [{"inference_id": "b", "label": "2"}])["labels"] == 2
    with pytest.raises(InvalidInput, match="does not exist"):
        sdk.upload_labels("m", tmp_path / "missing.csv")

    run = write_report(plat, "m")
    assert sdk.monitor_report("m", run["id"]) == {"monitor": "m", "rows": 500}
    assert "report" in sdk.monitor_report("m", run["id"], format="html")
    assert [r["id"] for r in sdk.monitor_runs("m")] == [run["id"]]
    assert sdk.monitor_run("m", run["id"])["status"] == "succeeded"
    assert sdk.monitor_run("m", run["id"])["summary"]["estimate"]["accuracy"] == 0.912  # summary keys pass through
    assert sdk.monitor("m")["runs"][0]["summary"]["estimate"]["high"] == 0.94
    alert = plat.monitors.record_alerts("m", run["id"], [{"key": "k"}])["opened"][0]
    assert [a["id"] for a in sdk.alerts(open=True, monitor="m")] == [alert["id"]]
    assert sdk.alert(alert["id"])["key"] == "k"
    assert sdk.monitor("m")["alerts"][0]["id"] == alert["id"]

    failed = sdk.run_monitor("m", timeout=180)  # waits for the real worker
    assert failed["status"] == "failed" and failed["error"]
    assert sdk.delete_monitor("m") == {"deleted": "m"}
    with pytest.raises(NotFound):
        sdk.monitor("m")


# ----------------------------------------------------------------------------- CLI


def test_cli(cli, plat, tmp_path: Path):
    one_line_error(cli("monitors", "create", "m", "--endpoint", "nope"), 2, "endpoint 'nope' not found")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "quiet"), 2, "captures no traffic",
                   "loopml endpoints update quiet --capture 100")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "mnist", "--threshold", "bogus=1"), 2,
                   "threshold 'bogus' is not known")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "mnist", "--threshold", "psi"), 2, "KEY=VALUE")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "mnist", "--window", "1y"), 2, "window")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "mnist", "--schedule", "often"), 2, "cron")
    one_line_error(cli("monitors", "create", "m", "--endpoint", "mnist", "--webhook", "http://[::1"), 2,
                   "webhook 'http://[::1': must be an http:// or https:// URL")  # was a 500 (urlsplit's ValueError)
    one_line_error(cli("monitors", "show", "nope"), 2, "monitor 'nope' not found")
    one_line_error(cli("monitors", "run", "nope"), 2, "monitor 'nope' not found")

    made = cli("monitors", "create", "m", "--endpoint", "mnist", "--schedule", "*/5 * * * *", "--window", "1h",
               "--min-samples", "50", "--threshold", "psi=0.3", "--threshold", "accuracy=0.9",
               "--webhook", "http://127.0.0.1:9/hook")
    assert made.exit_code == 0, made.output
    assert "created monitor m on endpoint mnist" in made.stdout
    rec = ok_json(cli("monitors", "show", "m", "--json"))
    assert rec["thresholds"] == {"psi": 0.3, "accuracy": 0.9} and rec["min_samples"] == 50
    listed = cli("monitors", "list")
    assert listed.exit_code == 0 and "mnist" in listed.stdout and "*/5 * * * *" in listed.stdout
    shown = cli("monitors", "show", "m")
    assert shown.exit_code == 0 and "psi=0.3" in shown.stdout

    labels = tmp_path / "labels.csv"
    labels.write_text("inference_id,label\nreq-1,1\nbroken\nreq-2,2\n")
    up = cli("monitors", "labels", "m", str(labels))
    assert up.exit_code == 0, up.output
    assert "2 labels stored" in up.stdout and "1 invalid" in up.stdout and "not seen" in up.stdout
    one_line_error(cli("monitors", "labels", "m", str(tmp_path / "nope.csv")), 2, "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    one_line_error(cli("monitors", "labels", "m", str(bad)), 2, "header")

    run = write_report(plat, "m")
    plat.monitors.record_alerts("m", run["id"], [{"key": "pixel", "message": "pixel drifted"}])
    runs = cli("monitors", "runs", "m")
    assert runs.exit_code == 0 and run["id"] in runs.stdout and "est. accuracy" in runs.stdout and "0.912" in runs.stdout
    assert ok_json(cli("monitors", "report", "m", run["id"])) == {"monitor": "m", "rows": 500}
    page = tmp_path / "report.html"
    assert cli("monitors", "report", "m", run["id"], "--html", str(page)).exit_code == 0
    assert "report" in page.read_text()
    one_line_error(cli("monitors", "report", "m", run["id"], "--html", str(tmp_path / "no-dir" / "r.html")), 2,
                   "cannot write it")  # was an OSError traceback
    [alert] = ok_json(cli("alerts", "list", "--open", "--json"))
    assert alert["key"] == "pixel"
    listed = cli("alerts", "list", "--monitor", "m")
    assert listed.exit_code == 0 and "pixel" in listed.stdout and alert["id"] in listed.stdout
    shown = cli("alerts", "show", alert["id"])
    assert shown.exit_code == 0 and "pixel" in shown.stdout
    one_line_error(cli("alerts", "show", "alert-nope"), 2, "alert 'alert-nope' not found")

    failed = cli("monitors", "run", "m")  # a real worker; the run fails (no baseline) → exit 1, said why
    assert failed.exit_code == 1 and "failed" in failed.stdout and "error" in failed.stdout
    assert cli("monitors", "pause", "m").exit_code == 0
    assert cli("monitors", "resume", "m").exit_code == 0
    assert ok_json(cli("monitors", "delete", "m", "--json")) == {"deleted": "m"}


def test_a_run_shows_the_estimate_beside_the_measured_accuracy(capsys):
    from loopml.cli.monitors import print_run

    summary = {"estimate": {"accuracy": 0.8123, "low": 0.78, "high": 0.84, "n": 400, "floor": 0.9, "violated": True,
                            "overruled": False},
               "quality": {"accuracy": 0.75, "n": 120, "estimate": {"accuracy": 0.8, "low": 0.74, "high": 0.86}}}
    run = {"id": "run-1", "monitor": "m", "status": "succeeded", "rows": 400, "summary": summary,
           "violations": [{"key": "quality.estimated_accuracy", "message": "estimated accuracy 0.812 < 0.9"}]}
    print_run(run)
    out = capsys.readouterr().out
    assert "accuracy estimate: 0.812 [0.780, 0.840] on 400 rows" in out
    assert "wholly below the accuracy floor 0.9" in out
    assert "quality: accuracy 0.750 on 120 labelled rows (estimated on the same rows: 0.800 [0.740, 0.860])" in out
    print_run({**run, "summary": {"estimate": {"reason": "the baseline of digits:1 predates accuracy estimates"}},
               "violations": []})
    assert "accuracy estimate: none (the baseline of digits:1 predates accuracy estimates)" in capsys.readouterr().out
