"""Endpoints and monitors repositories' contract, run unchanged on SQLite and PostgreSQL.

The endpoint rows are what the serving process polls every 0.25 s (``generations``) and writes
back (``report``); every write that depends on a generation is conditional on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from loopml.core.errors import Conflict, NotFound
from loopml.store import tables as t
from loopml.store.endpoints_repo import CREATING, FAILED, IN_SERVICE, UPDATING, EndpointRepo
from loopml.core.jobstatus import FAILED as JOB_FAILED
from loopml.core.jobstatus import QUEUED as JOB_QUEUED
from loopml.core.jobstatus import RUNNING as JOB_RUNNING
from loopml.store.jobs_repo import JobRepo
from loopml.store.monitors_repo import (ACTIVE, INSUFFICIENT, OPEN, PAUSED, QUEUED, RESOLVED, RUNNING,
                                        SUCCEEDED, MonitorRepo)
from loopml.store.monitors_repo import FAILED as RUN_FAILED
from tests.store_support import ODD_JSON, assert_utc_iso, count

pytest_plugins = ("tests.backends",)


# -- endpoints -------------------------------------------------------------------------------

def _desired(version: int = 1, **extra) -> tuple[dict, dict]:
    variant = {"name": "primary", "weight": 1.0, "model": "clf", "version": version, "alias": None}
    spec = {"variants": [variant], "shadow": None, "capture_percent": 12.5, "extra": ODD_JSON, **extra}
    resolved = {"variants": [{**variant, "artifact_prefix": f"models/clf/v{version}", "kind": "tabular"}],
                "shadow": None}
    return spec, resolved


def test_endpoint_create_get_list_and_json_round_trip(metadata_store) -> None:
    repo = EndpointRepo(metadata_store)
    assert repo.list() == [] and repo.generations() == {}
    spec, resolved = _desired()
    rec = repo.create("b-ep", spec, resolved)
    assert rec["spec"] == spec and rec["resolved"] == resolved  # JSON comes back unchanged
    assert (rec["generation"], rec["status"], rec["served_generation"], rec["served"], rec["ready"]) == (
        1, CREATING, 0, None, False)
    assert isinstance(rec["uid"], str) and len(rec["uid"]) == 32
    assert assert_utc_iso(rec["created_at"]) == assert_utc_iso(rec["updated_at"])
    assert repo.get("b-ep") == rec
    repo.create("a-ep", *_desired(2))
    assert [e["name"] for e in repo.list()] == ["a-ep", "b-ep"]  # by name
    assert repo.get("a-ep")["uid"] != rec["uid"]


def test_endpoint_name_conflict_and_not_found(metadata_store) -> None:
    repo = EndpointRepo(metadata_store)
    repo.create("clf-ep", *_desired())
    with pytest.raises(Conflict, match="endpoint 'clf-ep' already exists"):
        repo.create("clf-ep", *_desired(2))
    assert repo.get("clf-ep")["spec"]["variants"][0]["version"] == 1  # the first one, untouched
    assert count(metadata_store, t.Endpoint) == 1
    with pytest.raises(NotFound, match="endpoint 'clf-epp' not found; did you mean 'clf-ep'") as info:
        repo.get("clf-epp")
    assert info.value.details["suggestions"] == ["clf-ep"]
    for call in (lambda: repo.update("nope", *_desired()), lambda: repo.delete("nope")):
        with pytest.raises(NotFound, match="endpoint 'nope' not found"):
            call()
    repo.delete("clf-ep")
    with pytest.raises(NotFound):
        repo.get("clf-ep")
    assert repo.generations() == {} and repo.re_resolve("clf-ep", 1, {}, "gone") is False
    assert repo.report("clf-ep", 1, ok=True, served={}) is False


def test_serving_poll_and_reports_follow_the_generation(metadata_store) -> None:
    repo = EndpointRepo(metadata_store)
    uid = repo.create("ep", *_desired(1))["uid"]
    assert repo.generations() == {"ep": (uid, 1)}
    created = repo.get("ep")["created_at"]

    updated = repo.update("ep", *_desired(2), message="new variant")
    assert (updated["generation"], updated["status"], updated["message"]) == (2, UPDATING, "new variant")
    assert updated["created_at"] == created and assert_utc_iso(updated["updated_at"]) >= assert_utc_iso(created)
    assert repo.generations() == {"ep": (uid, 2)}

    served = {"variants": [{"name": "primary", "model": "clf", "version": 2}], "note": ODD_JSON}
    # a slow serving process reporting the generation before: not applied, nothing changes
    assert repo.report("ep", 1, ok=True, served={"old": True}) is False
    # the right generation of another incarnation of the name (deleted and created again): refused
    assert repo.report("ep", 2, ok=True, served=served, uid="0" * 32) is False
    assert repo.get("ep") == updated
    assert repo.report("ep", 2, ok=True, served=served, uid=uid) is True
    live = repo.get("ep")
    assert (live["status"], live["served_generation"], live["served"], live["ready"]) == (IN_SERVICE, 2, served, True)

    # generation 3 fails to load: the endpoint says Failed, and still names what it serves
    repo.update("ep", *_desired(3))
    assert repo.get("ep")["ready"] is False  # served generation 2 is not the desired one
    assert repo.report("ep", 3, ok=False, served=None, message="loopml.json missing") is True
    failed = repo.get("ep")
    assert (failed["status"], failed["message"], failed["served_generation"], failed["served"]) == (
        FAILED, "loopml.json missing", 2, served)

    # an alias move re-resolves only the generation it was computed from
    assert repo.re_resolve("ep", 2, {"variants": []}, "alias moved") is False
    fresh = _desired(4)[1]
    assert repo.re_resolve("ep", 3, fresh, "alias prod moved to 4") is True
    moved = repo.get("ep")
    assert (moved["generation"], moved["status"], moved["resolved"], moved["message"]) == (
        4, UPDATING, fresh, "alias prod moved to 4")
    assert moved["spec"] == _desired(3)[0]  # the desired spec itself is not re-written
    assert repo.generations() == {"ep": (uid, 4)}


def test_reset_served_when_the_serving_process_restarts(metadata_store) -> None:
    repo = EndpointRepo(metadata_store)
    repo.create("served", *_desired())
    repo.create("never-served", *_desired())
    assert repo.report("served", 1, ok=True, served={"v": 1})
    repo.reset_served("serving process starting")
    got = repo.get("served")
    assert (got["served_generation"], got["status"], got["message"], got["ready"]) == (
        0, UPDATING, "serving process starting", False)
    untouched = repo.get("never-served")
    assert (untouched["status"], untouched["message"]) == (CREATING, None)
    assert repo.generations()["served"][1] == 1  # the desired generation is unchanged
    assert repo.report("served", 1, ok=True, served={"v": 1}) is True  # and can be served again
    assert repo.get("served")["ready"] is True


# -- monitors --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)


def _monitor(repo: MonitorRepo, name: str = "drift", **over) -> dict:
    fields = dict(endpoint="clf-ep", variant=None, schedule="*/5 * * * *", tz="Europe/Paris", window_s=3600,
                  min_samples=20, thresholds={"psi": 0.2, "nested": ODD_JSON}, webhooks=["http://hook/a"],
                  next_run_at=NOW)
    fields.update(over)
    return repo.create(name, **fields)


def test_monitor_create_get_list_and_conflict(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    rec = _monitor(repo, "b-mon")
    assert rec["thresholds"] == {"psi": 0.2, "nested": ODD_JSON} and rec["webhooks"] == ["http://hook/a"]
    assert (rec["status"], rec["cursor"], rec["next_run_at"]) == (ACTIVE, None, "2026-11-27T10:00:00Z")
    assert_utc_iso(rec["created_at"])
    assert repo.get("b-mon") == rec
    _monitor(repo, "a-mon", endpoint="other-ep", schedule=None, next_run_at=None)
    assert [m["name"] for m in repo.list()] == ["a-mon", "b-mon"]
    assert [m["name"] for m in repo.list(endpoint="other-ep")] == ["a-mon"]
    repo.set_status("a-mon", PAUSED)
    assert [m["name"] for m in repo.list(status=ACTIVE)] == ["b-mon"]
    with pytest.raises(Conflict, match="monitor 'b-mon' already exists"):
        _monitor(repo, "b-mon", window_s=1)
    assert repo.get("b-mon")["window_s"] == 3600 and count(metadata_store, t.Monitor) == 2
    with pytest.raises(NotFound, match="monitor 'b-mo' not found; did you mean 'b-mon'"):
        repo.get("b-mo")
    for call in (lambda: repo.set_status("nope", PAUSED), lambda: repo.runs("nope"),
                 lambda: repo.create_run("nope"), lambda: repo.upsert_labels("nope", [("i", "l")]),
                 lambda: repo.delete("nope")):
        with pytest.raises(NotFound, match="monitor 'nope' not found"):
            call()
    assert count(metadata_store, t.Job) == 0 and count(metadata_store, t.MonitorRun) == 0


def test_due_monitors_in_time_order(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo, "late", next_run_at=NOW + timedelta(minutes=1))
    _monitor(repo, "early", next_run_at=NOW - timedelta(minutes=5))
    _monitor(repo, "now", next_run_at=NOW)
    _monitor(repo, "manual", schedule=None, next_run_at=None)
    _monitor(repo, "paused", next_run_at=NOW - timedelta(hours=1))
    repo.set_status("paused", PAUSED, next_run_at=NOW - timedelta(hours=1))
    assert repo.due(NOW) == ["early", "now"]
    assert repo.due(NOW + timedelta(hours=1)) == ["early", "now", "late"]
    resumed = repo.set_status("paused", ACTIVE, next_run_at=NOW - timedelta(hours=2))
    assert resumed["status"] == ACTIVE and resumed["next_run_at"] == "2026-11-27T08:00:00Z"
    assert repo.due(NOW)[0] == "paused"


def test_a_run_and_its_job_are_written_together(metadata_store) -> None:
    repo, jobs = MonitorRepo(metadata_store), JobRepo(metadata_store)
    _monitor(repo)
    run, job = repo.create_run("drift")
    assert (run["status"], run["source"], run["job_id"], run["monitor"]) == (QUEUED, "manual", job["id"], "drift")
    assert run["violations"] == [] and run["since"] is None
    assert_utc_iso(run["created_at"])
    stored = jobs.get(job["id"])
    assert (stored["kind"], stored["status"], stored["spec"]) == ("monitor", JOB_QUEUED,
                                                                  {"monitor": "drift", "run_id": run["id"]})
    assert [e["status"] for e in jobs.events(job["id"])] == [JOB_QUEUED]

    with pytest.raises(Conflict, match="has a run in progress") as info:
        repo.create_run("drift")
    assert info.value.details["run_id"] == run["id"]
    assert count(metadata_store, t.MonitorRun) == 1 and count(metadata_store, t.Job) == 1  # nothing half-written
    assert repo.get_run("drift", run["id"]) == run == repo.run_by_id(run["id"])
    _monitor(repo, "other")
    with pytest.raises(NotFound, match=f"run '{run['id']}' of monitor 'other' not found"):
        repo.get_run("other", run["id"])
    with pytest.raises(NotFound, match="monitor run 'run-nope' not found"):
        repo.run_by_id("run-nope")


def test_run_outcome_moves_the_cursor_forward_only(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo)
    run, _ = repo.create_run("drift")
    assert repo.start_run(run["id"], since=NOW - timedelta(hours=1), until=NOW) is True
    started = repo.run_by_id(run["id"])
    assert (started["status"], started["since"], started["until"]) == (RUNNING, "2026-11-27T09:00:00Z",
                                                                       "2026-11-27T10:00:00Z")
    assert_utc_iso(started["started_at"])
    violations = [{"key": "psi:x", "severity": "critical", "statistic": {"psi": 0.4}}]
    done = repo.finish_run(run["id"], SUCCEEDED, rows=120, malformed=2, violations=violations,
                           summary={"psi": {"x": 0.4}, "odd": ODD_JSON}, report_key="reports/r.json", cursor=NOW)
    assert (done["status"], done["rows"], done["malformed"], done["violations"]) == (SUCCEEDED, 120, 2, violations)
    assert done["summary"]["odd"] == ODD_JSON and done["report_key"] == "reports/r.json"
    assert_utc_iso(done["ended_at"])
    assert repo.get("drift")["cursor"] == "2026-11-27T10:00:00Z"
    assert repo.start_run(run["id"], since=None, until=None) is False  # a finished run does not start again

    merged = repo.update_summary(run["id"], {"alerts": {"opened": 1}})
    assert merged["summary"] == {"psi": {"x": 0.4}, "odd": ODD_JSON, "alerts": {"opened": 1}}

    older, _ = repo.create_run("drift", source="schedule")
    repo.finish_run(older["id"], INSUFFICIENT, rows=3, cursor=NOW - timedelta(days=1))
    assert repo.get("drift")["cursor"] == "2026-11-27T10:00:00Z"  # never moves back
    assert [r["id"] for r in repo.runs("drift")] == [older["id"], run["id"]]  # newest first
    assert [r["id"] for r in repo.runs("drift", limit=1)] == [older["id"]]
    with pytest.raises(NotFound, match="monitor run 'run-nope' not found"):
        repo.finish_run("run-nope", SUCCEEDED)


def test_schedule_run_moves_the_next_run_time_in_one_transaction(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo, next_run_at=NOW)
    following = NOW + timedelta(minutes=5)
    assert repo.schedule_run("drift", NOW - timedelta(seconds=1), lambda m: following) is None  # not due yet
    assert repo.get("drift")["next_run_at"] == "2026-11-27T10:00:00Z"
    run = repo.schedule_run("drift", NOW, lambda m: following)
    assert run is not None and run["source"] == "schedule" and run["status"] == QUEUED
    assert repo.get("drift")["next_run_at"] == "2026-11-27T10:05:00Z"
    # due again while that run is in progress: the time moves on, no second run
    assert repo.schedule_run("drift", following, lambda m: following + timedelta(minutes=5)) is None
    assert repo.get("drift")["next_run_at"] == "2026-11-27T10:10:00Z"
    assert count(metadata_store, t.MonitorRun) == 1
    repo.set_status("drift", PAUSED, next_run_at=NOW)
    assert repo.schedule_run("drift", NOW + timedelta(days=1), lambda m: None) is None
    assert repo.schedule_run("gone", NOW, lambda m: None) is None


def test_orphaned_runs_fail_with_their_jobs_reason(metadata_store) -> None:
    repo, jobs = MonitorRepo(metadata_store), JobRepo(metadata_store)
    _monitor(repo, "a")
    _monitor(repo, "b")
    orphan, orphan_job = repo.create_run("a")
    alive, alive_job = repo.create_run("b")
    jobs.transition(orphan_job["id"], JOB_RUNNING, expect=[JOB_QUEUED])
    repo.start_run(orphan["id"], since=None, until=None)
    jobs.transition(orphan_job["id"], JOB_FAILED, expect=[JOB_RUNNING], reason="worker killed")
    jobs.transition(alive_job["id"], JOB_RUNNING, expect=[JOB_QUEUED])
    assert repo.fail_orphaned_runs() == [orphan["id"]]
    failed = repo.run_by_id(orphan["id"])
    assert failed["status"] == RUN_FAILED and failed["error"] == f"job {orphan_job['id']} failed: worker killed"
    assert_utc_iso(failed["ended_at"])
    assert repo.run_by_id(alive["id"])["status"] == QUEUED
    assert repo.fail_orphaned_runs() == []
    assert repo.create_run("a")[0]["status"] == QUEUED  # the monitor can run again


def test_labels_upsert_last_wins_per_monitor(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo, "a")
    _monitor(repo, "b")
    assert repo.upsert_labels("a", [("i1", "cat"), ("i2", "dog"), ("i1", "bird")]) == 2  # repeated id: last wins
    repo.upsert_labels("b", [("i1", "other monitor")])
    assert repo.labels_for("a", ["i1", "i2", "i3", "", "i1"]) == {"i1": "bird", "i2": "dog"}
    repo.upsert_labels("a", [("i2", "wolf"), ("ünï-3", "✓")])  # replaced, added
    assert repo.labels_for("a", ["i1", "i2", "ünï-3"]) == {"i1": "bird", "i2": "wolf", "ünï-3": "✓"}
    assert (repo.count_labels("a"), repo.count_labels("b")) == (3, 1)
    many = [(f"id-{i}", str(i % 10)) for i in range(1200)]  # more than one chunk of 500
    assert repo.upsert_labels("b", many) == 1200
    got = repo.labels_for("b", [i for i, _ in many])
    assert len(got) == 1200 and got["id-1199"] == "9"
    assert repo.labels_for("nope", ["i1"]) == {}


def test_alerts_open_bump_and_resolve_one_per_key(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo)
    _monitor(repo, "quiet")
    psi = {"key": "psi:x", "severity": "warning", "statistic": {"psi": 0.3}, "message": "x drifted"}
    acc = {"key": "accuracy", "severity": "critical", "statistic": {"accuracy": 0.5}}
    first = repo.record_alerts("drift", "run-1", [psi, acc, psi])  # a key twice in one run: one alert
    assert [a["key"] for a in first["opened"]] == ["psi:x", "accuracy"] and not first["updated"] + first["resolved"]
    alert = first["opened"][0]
    assert (alert["status"], alert["count"], alert["message"], alert["statistic"]) == (OPEN, 1, "x drifted",
                                                                                       {"psi": 0.3})
    assert first["opened"][1]["message"] == "accuracy"  # no message: the key
    assert alert["first_at"] == alert["last_at"] and assert_utc_iso(alert["first_at"])

    # the next run: psi again (bumped), accuracy checked and fine (resolved)
    second = repo.record_alerts("drift", "run-2", [{**psi, "statistic": {"psi": 0.5}, "severity": "critical"}])
    assert [a["id"] for a in second["updated"]] == [alert["id"]] and not second["opened"]
    bumped = second["updated"][0]
    assert (bumped["count"], bumped["run_id"], bumped["severity"], bumped["statistic"]) == (
        2, "run-2", "critical", {"psi": 0.5})
    assert [a["key"] for a in second["resolved"]] == ["accuracy"]
    assert second["resolved"][0]["status"] == RESOLVED and assert_utc_iso(second["resolved"][0]["resolved_at"])

    # a run that did not check psi leaves it open
    third = repo.record_alerts("drift", "run-3", [], checked=["accuracy"])
    assert third == {"opened": [], "updated": [], "resolved": []}
    assert count(metadata_store, t.Alert, t.Alert.status == OPEN) == 1
    # accuracy violated again: a NEW alert (the resolved one stays resolved)
    fourth = repo.record_alerts("drift", "run-4", [acc], checked=["accuracy"])
    assert len(fourth["opened"]) == 1 and fourth["opened"][0]["id"] != first["opened"][1]["id"]
    repo.record_alerts("quiet", "run-q", [acc])

    assert {(a["monitor"], a["key"]) for a in repo.alerts(open=True)} == {
        ("drift", "psi:x"), ("drift", "accuracy"), ("quiet", "accuracy")}
    assert [a["key"] for a in repo.alerts(open=False)] == ["accuracy"]
    newest_first = repo.alerts(monitor="drift")
    assert len(newest_first) == 3
    assert [a["last_at"] for a in newest_first] == sorted((a["last_at"] for a in newest_first), reverse=True)


def test_ack_and_resolve_by_hand(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo)
    alert = repo.record_alerts("drift", "run-1", [{"key": "psi:x"}])["opened"][0]
    acked = repo.ack_alert(alert["id"], actor="alice")
    assert acked["status"] == OPEN and acked["acked_by"] == "alice" and assert_utc_iso(acked["acked_at"])
    assert repo.ack_alert(alert["id"], actor="bob")["acked_by"] == "alice"  # the first ack is kept
    notes = [{"url": "http://hook/a", "status": 200, "at": "2026-11-27T10:00:00Z", "odd": ODD_JSON}]
    repo.set_notifications(alert["id"], notes)
    assert repo.alert(alert["id"])["notifications"] == notes

    resolved = repo.resolve_alert(alert["id"], actor="carol")
    assert (resolved["status"], resolved["resolved_by"]) == (RESOLVED, "carol")
    with pytest.raises(Conflict, match="already resolved"):
        repo.resolve_alert(alert["id"])
    with pytest.raises(Conflict, match="only an open alert can be acknowledged"):
        repo.ack_alert(alert["id"])
    # the key can open again after a resolution by hand
    again = repo.record_alerts("drift", "run-2", [{"key": "psi:x"}])
    assert len(again["opened"]) == 1 and again["opened"][0]["id"] != alert["id"]
    for call in (lambda: repo.alert("alert-nope"), lambda: repo.ack_alert("alert-nope"),
                 lambda: repo.resolve_alert("alert-nope")):
        with pytest.raises(NotFound, match="alert 'alert-nope' not found"):
            call()


def test_deleting_a_monitor_takes_its_runs_labels_and_alerts(metadata_store) -> None:
    repo = MonitorRepo(metadata_store)
    _monitor(repo, "gone")
    _monitor(repo, "kept")
    for name in ("gone", "kept"):
        run, _ = repo.create_run(name)
        repo.upsert_labels(name, [("i1", "a")])
        repo.record_alerts(name, run["id"], [{"key": "k"}])
    repo.delete("gone")
    with pytest.raises(NotFound):
        repo.get("gone")
    for table in (t.MonitorRun, t.MonitorLabel, t.Alert):
        assert count(metadata_store, table, table.monitor == "gone") == 0
        assert count(metadata_store, table, table.monitor == "kept") == 1
    assert len(repo.runs("kept")) == 1 and repo.count_labels("kept") == 1
