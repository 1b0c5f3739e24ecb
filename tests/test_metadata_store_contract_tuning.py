"""The tuning repository's contract, run unchanged on SQLite and PostgreSQL.

A tuning job and its trials are the whole search state (the Optuna study is rebuilt from them), so
what goes in must come back unchanged: JSON params and system attributes, floats, states.
"""

from __future__ import annotations

import pytest

from loopml.core.errors import Conflict, NotFound
from loopml.core.jobstatus import (TRIAL_COMPLETE, TRIAL_PRUNED, TRIAL_RUNNING, TUNING_FAILED, TUNING_RUNNING,
                                   TUNING_STOPPED, TUNING_STOPPING, TUNING_SUCCEEDED)
from loopml.store import tables as t
from loopml.store.tuning_repo import TuningRepo
from tests.store_support import ODD_JSON, assert_utc_iso, count

pytest_plugins = ("tests.backends",)

SPEC = {"dataset": "digits:1", "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                         "filters": {"type": "categorical", "choices": [16, 32, 64]}},
        "objective": "val_accuracy", "max_trials": 4, "extra": ODD_JSON}


def test_create_get_list_and_json_round_trip(metadata_store) -> None:
    repo = TuningRepo(metadata_store)
    assert repo.list() == [] and repo.active_names() == []
    rec = repo.create("sweep-b", SPEC)
    assert (rec["name"], rec["status"], rec["spec"], rec["result"], rec["stop_requested"]) == (
        "sweep-b", TUNING_RUNNING, SPEC, None, False)
    assert_utc_iso(rec["created_at"])
    assert rec["ended_at"] is None
    assert repo.get("sweep-b") == rec
    repo.create("sweep-a", {"x": 1})
    assert [r["name"] for r in repo.list()] == ["sweep-a", "sweep-b"]  # newest first
    assert repo.active_names() == ["sweep-b", "sweep-a"]  # oldest first: the order they are advanced in
    with pytest.raises(Conflict, match="tuning job 'sweep-b' already exists"):
        repo.create("sweep-b", {"other": True})
    assert repo.get("sweep-b")["spec"] == SPEC  # the first one, untouched
    with pytest.raises(NotFound, match="did you mean 'sweep-b' or 'sweep-a'"):
        repo.get("sweep-c")


def test_trials_round_trip_in_order_and_are_unique_per_number(metadata_store) -> None:
    repo = TuningRepo(metadata_store)
    repo.create("sw", SPEC)
    attrs = {"completed_rung_0": 0.8125, "grid_id": 3, "search_space": {"filters": [16, 32]}, "odd": ODD_JSON}
    repo.add_trial("sw", 2, "sw-002", {"learning_rate": 0.00123, "filters": 32})
    first = repo.add_trial("sw", 1, "sw-001", {"learning_rate": 1e-4, "filters": 16}, system_attrs=attrs)
    assert (first["state"], first["value"], first["intermediate"], first["system_attrs"]) == (
        TRIAL_RUNNING, None, {}, attrs)
    with pytest.raises(Conflict, match="already has trial 1"):
        repo.add_trial("sw", 1, "sw-001", {})
    with pytest.raises(NotFound):
        repo.add_trial("nope", 1, "nope-001", {})
    repo.update_trial("sw", 1, intermediate={"1": 0.5})
    assert repo.trials("sw")[0]["state"] == TRIAL_RUNNING and repo.trials("sw")[0]["ended_at"] is None
    repo.update_trial("sw", 1, state=TRIAL_PRUNED, value=0.5, intermediate={"1": 0.5}, system_attrs={"a": [1]})
    repo.update_trial("sw", 2, state=TRIAL_COMPLETE, value=0.9375, intermediate={"1": 0.75, "2": 0.9375})
    rows = repo.trials("sw")
    assert [r["number"] for r in rows] == [1, 2]
    assert (rows[0]["state"], rows[0]["value"], rows[0]["intermediate"], rows[0]["system_attrs"]) == (
        TRIAL_PRUNED, 0.5, {"1": 0.5}, {"a": [1]})
    assert (rows[1]["state"], rows[1]["value"], rows[1]["params"]) == (
        TRIAL_COMPLETE, 0.9375, {"learning_rate": 0.00123, "filters": 32})
    assert_utc_iso(rows[1]["ended_at"])
    assert count(metadata_store, t.TuningTrial) == 2


def test_stop_and_finish_move_only_an_active_job(metadata_store) -> None:
    repo = TuningRepo(metadata_store)
    repo.create("sw", SPEC)
    repo.set_result("sw", {"best": {"value": 0.5}})
    stopping = repo.request_stop("sw")
    assert (stopping["status"], stopping["stop_requested"]) == (TUNING_STOPPING, True)
    assert repo.active_names() == ["sw"]  # still advanced: its trials are being stopped
    assert repo.finish("sw", TUNING_STOPPED, reason="stopped by request", result={"best": None})
    assert not repo.finish("sw", TUNING_SUCCEEDED)  # ended is ended
    ended = repo.get("sw")
    assert (ended["status"], ended["reason"], ended["result"]) == (TUNING_STOPPED, "stopped by request", {"best": None})
    assert_utc_iso(ended["ended_at"])
    assert repo.request_stop("sw")["status"] == TUNING_STOPPED  # a stop after the end changes nothing
    assert repo.active_names() == []
    with pytest.raises(ValueError):
        repo.finish("sw", TUNING_RUNNING)
    repo.create("other", SPEC)
    assert repo.finish("other", TUNING_FAILED, reason="no trial completed")
    assert [r["name"] for r in repo.list(status=TUNING_FAILED)] == ["other"]


def test_deleting_a_tuning_job_deletes_its_trials(metadata_store) -> None:
    repo = TuningRepo(metadata_store)
    repo.create("sw", SPEC)
    repo.add_trial("sw", 1, "sw-001", {})
    with metadata_store.session() as s:
        s.delete(s.get(t.TuningJob, "sw"))
    assert count(metadata_store, t.TuningTrial) == 0


def test_delete_removes_an_ended_job_with_its_trials_and_refuses_an_active_one(metadata_store) -> None:
    repo = TuningRepo(metadata_store)
    repo.create("sw", SPEC)
    repo.add_trial("sw", 1, "sw-001", {"filters": 16})
    repo.create("kept", SPEC)
    repo.add_trial("kept", 1, "kept-001", {"filters": 32})
    with pytest.raises(Conflict, match="tuning job 'sw' is running; stop it first"):
        repo.delete("sw")
    repo.request_stop("sw")
    with pytest.raises(Conflict, match="tuning job 'sw' is stopping"):
        repo.delete("sw")
    assert len(repo.trials("sw")) == 1  # nothing deleted by a refused delete
    repo.finish("sw", TUNING_STOPPED)
    repo.delete("sw")
    with pytest.raises(NotFound):
        repo.get("sw")
    assert repo.trials("sw") == [] and [r["job_id"] for r in repo.trials("kept")] == ["kept-001"]
    with pytest.raises(NotFound, match="tuning job 'sw' not found"):
        repo.delete("sw")
