"""Hyperparameter tuning: the search space, the rebuilt Optuna study, and real searches whose trials
are real training jobs on the sample ``digits`` (tiny: 2-3 epochs, 4-6 trials, 2 at once).

The searches are marked ``tuning`` (and ``slow``): ``pytest -m tuning`` runs them alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from loopml.cli.main import app
from loopml.controlplane import ControlLoop
from loopml.core.errors import InvalidInput
from loopml.core.jobstatus import TUNING_ACTIVE
from loopml.core.settings import Settings
from loopml.datasets.service import register
from loopml.platform import Platform
from loopml.tuning.service import create_tuning, get_tuning
from loopml.tuning.space import parse_space

pytest_plugins = ("tests.backends",)

LR = "learning_rate=loguniform(1e-4,3e-2)"


# -- the search space (pure) -------------------------------------------------------------------

def test_space_parses_into_typed_dimensions() -> None:
    dims = parse_space("cnn", ["learning_rate=loguniform(1e-4,1e-2)", "filters=choice(16,32,64)",
                               "dropout=uniform(0,0.5)", "dense_units = int(8, 64)", "optimizer=choice(adam,sgd)"])
    assert dims == {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "filters": {"type": "categorical", "choices": [16, 32, 64]},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
                    "dense_units": {"type": "int", "low": 8, "high": 64, "log": False},
                    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}
    # an int hyperparameter searched with uniform stays a whole number
    assert parse_space("cnn", {"filters": "uniform(8,32)"})["filters"]["type"] == "int"


@pytest.mark.parametrize("space, fragment", [
    (["learning_rate"], "must look like NAME=FUNCTION(ARGS)"),
    (["learning_rate=normal(0,1)"], "unknown function 'normal'"),
    (["dropout=loguniform(0,0.5)"], "lower bound above 0"),
    (["learning_rate=loguniform(0,1e-2)"], "space 'learning_rate=loguniform(0,1e-2)': hyperparameter learning_rate='0' is out of range"),
    (["learning_rate=uniform(1e-2,1e-4)"], "lower bound must be below"),
    (["learning_rate=uniform(1e-2)"], "takes two bounds"),
    (["units=choice(16,32)"], "'units' is not a hyperparameter of model 'cnn' (it is only used by rnn, mlp)"),
    (["filters=choice(16,sixteen)"], "is not a valid int"),
    (["dropout=uniform(0,2)"], "out of range"),
    (["dropout=int(0,1)"], "dropout is a float"),
    (["filters=choice(8,8)"], "given twice"),
    ([], "a search space is required"),
])
def test_bad_space_is_refused_with_what_to_write(space, fragment) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_space("cnn", space)
    assert fragment in err.value.message and "\n" not in err.value.message


# -- the study rebuilt from the store (Optuna, no training) ------------------------------------

def _spec(**over) -> dict:
    spec = {"space": parse_space("cnn", [LR, "filters=choice(4,8,16)"]), "direction": "maximize",
            "strategy": "random", "early_stopping": "off", "max_trials": 6, "seed": 7, "epochs": 2,
            "warm_trials": []}
    return {**spec, **over}


def test_a_seeded_search_asks_the_same_parameters_again() -> None:
    from loopml.tuning.study import rebuild

    for strategy in ("random", "bayesian", "grid", "hyperband"):
        spec = _spec(strategy=strategy, space=parse_space("cnn", ["filters=choice(4,8,16)", "dense_units=choice(8,16)"]))
        runs = [[rebuild("s", spec, []).ask()[1] for _ in range(3)] for _ in range(2)]
        assert runs[0] == runs[1], strategy


def test_a_rebuilt_hyperband_study_prunes_as_the_lost_one_would() -> None:
    """Trials recorded in the store (one complete, one running) come back with their epochs: a new
    trial below the best at epoch 1 is pruned, one above it is promoted."""
    from loopml.tuning.study import rebuild

    spec = _spec(strategy="hyperband")
    rows = [{"number": 1, "params": {"learning_rate": 1e-3, "filters": 8}, "state": "complete", "value": 0.9,
             "intermediate": {"1": 0.8, "2": 0.9}, "system_attrs": {"completed_rung_0": 0.8}},
            {"number": 2, "params": {"learning_rate": 2e-3, "filters": 4}, "state": "running", "value": None,
             "intermediate": {"1": 0.85}, "system_attrs": {"completed_rung_0": 0.85}}]
    search = rebuild("hb", spec, rows)
    assert set(search.running) == {2} and search.running[2].params == rows[1]["params"]
    low, _ = search.ask()
    search.report(low, {1: 0.3})
    assert low.should_prune()
    high, _ = search.ask()
    search.report(high, {1: 0.95})
    assert not high.should_prune()


def test_early_stopping_auto_stops_a_trial_below_the_median_and_off_never_does() -> None:
    from loopml.tuning.study import rebuild

    done = [{"number": n, "params": {"learning_rate": 1e-3, "filters": 8}, "state": "complete", "value": v,
             "intermediate": {"1": v - 0.1, "2": v, "3": v}, "system_attrs": {}}
            for n, v in ((1, 0.8), (2, 0.85), (3, 0.9))]
    for early_stopping, pruned in (("auto", True), ("off", False)):
        search = rebuild("md", _spec(strategy="bayesian", early_stopping=early_stopping), done)
        trial, _ = search.ask()
        search.report(trial, {1: 0.2})
        assert not trial.should_prune()  # epoch 1 is the warm-up: never judged
        search.report(trial, {2: 0.3})
        assert bool(trial.should_prune()) is pruned, early_stopping


# -- bad requests: one line, HTTP 400 / CLI exit 2 ----------------------------------------------

@pytest.fixture
def settings(tmp_path: Path, clean_env: None) -> Settings:
    return Settings(home=tmp_path / "loopml-home", port=0, serving_port=0, token=None, reconcile_interval_s=0.2,
                    max_concurrent_jobs=2)


@pytest.fixture
def cli(live_server, monkeypatch):
    monkeypatch.setenv("LOOPML_API_URL", live_server)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def _one_line(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


def test_bad_tuning_requests_are_one_line_errors(cli, live_server) -> None:
    assert cli("datasets", "add", "digits", "sample:digits", "--json").exit_code == 0
    base = ["tune", "--dataset", "digits", "--model", "cnn", "--space", LR]
    _one_line(cli(*base, "--strategy", "bayes"), 2, "strategy 'bayes' must be one of bayesian, random, grid, hyperband")
    _one_line(cli(*base, "--objective", "val_acc"), 2, "did you mean 'val_accuracy'?")
    _one_line(cli(*base, "--early-stopping", "on"), 2, "early stopping 'on' must be one of off, auto")
    _one_line(cli(*base, "--space", "dropout=uniform(0.5,0.1)"), 2, "lower bound must be below")
    _one_line(cli(*base, "--space", "units=int(8,64)"), 2, "only used by rnn, mlp")
    _one_line(cli(*base, "--strategy", "grid"), 2, "grid needs choice(...) for every dimension; learning_rate")
    _one_line(cli(*base, "--param", "learning_rate=0.1"), 2, "learning_rate is both searched")
    _one_line(cli(*base, "--param", "epochs=0"), 2, "epochs")
    _one_line(cli(*base, "--max-trials", "0"), 2, "max trials must be at least 1")
    _one_line(cli(*base, "--name", "bad name"), 2, "tuning job name 'bad name' is not valid")
    _one_line(cli(*base, "--model", "rnn"), 2, "needs a dataset of kind 'text'")
    _one_line(cli(*base, "--warm-start", "nope"), 2, "tuning job 'nope' not found")
    _one_line(cli("tuning", "show", "nope"), 2, "tuning job 'nope' not found")
    with httpx.Client(base_url=live_server) as http:
        bad = http.post("/tuning", json={"dataset": "digits", "space": ["lr=uniform(0,1)"]})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"
        assert "'lr' is not a hyperparameter" in bad.json()["message"]
        assert http.get("/tuning").json() == []  # nothing was stored
        assert http.get("/tuning/nope/trials").status_code == 404


# -- real searches --------------------------------------------------------------------------------

@pytest.mark.tuning
@pytest.mark.slow
def test_random_search_end_to_end_through_the_cli(cli) -> None:
    """Every trial is an ordinary training job (metrics per epoch, checkpoints, logs); the best is
    registered at the end, and only the best."""
    assert cli("datasets", "add", "digits", "sample:digits", "--json").exit_code == 0
    done = cli("tune", "--dataset", "digits", "--model", "cnn", "--space", LR, "--space", "filters=choice(4,8)",
               "--strategy", "random", "--max-trials", "4", "--parallel", "2", "--epochs", "2",
               "--register-as", "digits-tuned", "--name", "rand", "--wait", "--json")
    assert done.exit_code == 0, done.output
    final = json.loads(done.stdout)
    assert final["status"] == "succeeded", final["reason"]
    assert final["counts"] == {"complete": 4}
    trials = final["trials"]
    assert [t["job_id"] for t in trials] == ["rand-001", "rand-002", "rand-003", "rand-004"]
    best = max(trials, key=lambda t: t["value"])
    assert final["result"]["best"]["job_id"] == best["job_id"]
    assert final["result"]["model"]["ref"] == "digits-tuned:1"

    for trial in trials:
        job = json.loads(cli("jobs", "show", trial["job_id"], "--json").stdout)
        assert job["kind"] == "train" and job["status"] == "succeeded"
        assert {k: job["spec"]["hparams"][k] for k in trial["params"]} == trial["params"]
        assert [m["epoch"] for m in job["metrics"]] == [1, 2]
        assert trial["intermediate"] == {str(m["epoch"]): m["val_accuracy"] for m in job["metrics"]}
        assert cli("jobs", "logs", trial["job_id"]).stdout.strip()
    model = json.loads(cli("models", "show", "digits-tuned", "--json").stdout)
    assert [v["job_id"] for v in model["versions"]] == [best["job_id"]]  # the others registered nothing

    listed = json.loads(cli("tuning", "list", "--json").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("rand", "succeeded")]
    assert json.loads(cli("tuning", "trials", "rand", "--json").stdout)[0]["job_status"] == "succeeded"
    shown = cli("tuning", "show", "rand")
    assert shown.exit_code == 0 and "digits-tuned:1" in shown.stdout and "rand-004" in shown.stdout


@pytest.fixture
def plat(tmp_path):
    p = Platform(Settings(home=tmp_path, reconcile_interval_s=0.2, max_concurrent_jobs=2, serving_port=0))
    register(p, "digits", "sample:digits")
    yield p
    p.close()


def _wait_tuning(plat, name: str, timeout: float = 600, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = get_tuning(plat, name)
        if (check is None and record["status"] not in TUNING_ACTIVE) or (check is not None and check(record)):
            return record
        time.sleep(0.3)
    raise AssertionError(f"tuning job {name} still {get_tuning(plat, name)['status']} after {timeout:g}s")


def _never_more_than(plat, trials, parallel: int) -> None:
    """At no time were more trial jobs queued-or-running than ``parallel`` (from the recorded times)."""
    spans = []
    for trial in trials:
        job = plat.jobs.get(trial["job_id"])
        spans.append((job["created_at"], job["ended_at"]))
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= parallel, spans


@pytest.mark.tuning
@pytest.mark.slow
def test_hyperband_stops_unpromising_trials_early_and_registers_the_best(plat) -> None:
    create_tuning(plat, name="hb", dataset="digits", model="cnn", space=[LR, "filters=choice(4,8,16)"],
                  strategy="hyperband", max_trials=6, parallel=2, params={"epochs": 2, "batch_size": 8},
                  register_as="digits-hb")
    loop = ControlLoop(plat)
    loop.start()
    try:
        final = _wait_tuning(plat, "hb")
    finally:
        loop.stop()
    assert final["status"] == "succeeded", final["reason"]
    trials = final["trials"]
    assert len(trials) == 6
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, [(t["state"], t["intermediate"]) for t in trials]
    for trial in pruned:  # stopped through the job's cancel path
        assert plat.jobs.get(trial["job_id"])["status"] == "cancelled"
        assert list(trial["intermediate"]) == ["1"]  # judged at the first rung
        assert not plat.artifacts.list(f"models/digits-hb/{trial['job_id']}")  # no bundle kept
    # before its last epoch (a cancel is honoured within a heartbeat, an epoch here takes longer)
    assert any(len(plat.jobs.metrics(t["job_id"])) < 2 for t in pruned)
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert final["result"]["best"]["job_id"] == best["job_id"]
    version = plat.models.get("digits-hb")
    assert (version["version"], version["job_id"]) == (1, best["job_id"])
    _never_more_than(plat, trials, 2)


@pytest.mark.tuning
@pytest.mark.slow
def test_tuning_survives_a_control_plane_restart(plat) -> None:
    """The first control plane stops mid-search (its workers keep running); a new one rebuilds the
    study from the store, re-attaches the running trials and finishes with exactly max_trials."""
    create_tuning(plat, name="rs", dataset="digits", model="cnn", space=[LR, "filters=choice(4,8)"],
                  strategy="bayesian", max_trials=5, parallel=2, params={"epochs": 3})
    first = ControlLoop(plat)
    first.start()
    try:
        mid = _wait_tuning(plat, "rs", check=lambda r: any(
            t["job_status"] == "running" and (plat.jobs.get(t["job_id"])["progress"] or {}).get("epoch", 0) >= 1
            for t in r["trials"]))
    finally:
        first.stop()
    running_then = [t["job_id"] for t in get_tuning(plat, "rs")["trials"] if t["state"] == "running"]
    assert running_then and mid["status"] == "running"

    second = ControlLoop(plat)
    second.start()
    try:
        final = _wait_tuning(plat, "rs")
    finally:
        second.stop()
    assert final["status"] == "succeeded", final["reason"]
    trials = final["trials"]
    assert [t["number"] for t in trials] == [1, 2, 3, 4, 5]  # max_trials respected, numbers not reused
    assert len({t["job_id"] for t in trials}) == 5
    for trial in trials:
        assert trial["state"] == "complete" and trial["value"] is not None
        events = [e["status"] for e in plat.jobs.events(trial["job_id"])]
        assert events == ["queued", "running", "succeeded"], events  # each trial ran once
    for job_id in running_then:  # re-attached: its result reached the search
        trial = next(t for t in trials if t["job_id"] == job_id)
        assert trial["intermediate"] and set(trial["intermediate"]) == {"1", "2", "3"}
    _never_more_than(plat, trials, 2)


@pytest.mark.tuning
@pytest.mark.slow
def test_target_ends_the_search_and_stop_cancels_running_trials(plat) -> None:
    create_tuning(plat, name="tg", dataset="digits", model="cnn", space=[LR], strategy="random", max_trials=5,
                  parallel=1, params={"epochs": 1}, target=0.0)
    create_tuning(plat, name="st", dataset="digits", model="cnn", space=[LR], strategy="random", max_trials=5,
                  parallel=1, params={"epochs": 50})
    loop = ControlLoop(plat)
    loop.start()
    try:
        _wait_tuning(plat, "st", check=lambda r: any(t["job_status"] == "running" for t in r["trials"]))
        plat.tuning.request_stop("st")
        stopped = _wait_tuning(plat, "st")
        reached = _wait_tuning(plat, "tg")
    finally:
        loop.stop()
    assert reached["status"] == "succeeded" and "target val_accuracy 0 reached by trial 1" in reached["reason"]
    assert len(reached["trials"]) == 1  # the first completed trial reached it: no more were started
    assert stopped["status"] == "stopped" and [t["state"] for t in stopped["trials"]] == ["stopped"]
    assert plat.jobs.get(stopped["trials"][0]["job_id"])["status"] == "cancelled"
    assert "model" not in (stopped["result"] or {})


@pytest.mark.tuning
@pytest.mark.slow
def test_a_workflow_task_tunes_and_hands_on_the_best_model(plat) -> None:
    from loopml.workflows.service import create_workflow, start_execution

    definition = {"StartAt": "Tune", "States": {"Tune": {
        "Type": "Task", "Resource": "loopml:tune", "End": True,
        "Parameters": {"dataset.$": "$.dataset", "model": "cnn", "space": [LR], "strategy": "random",
                       "max_trials": 3, "parallel": 1, "params": {"epochs": 1}, "target": 0.0,
                       "register_as": "digits-wf"}}}}
    create_workflow(plat, "tune-flow", definition=definition)
    execution = start_execution(plat, "tune-flow", {"dataset": "digits"})
    loop = ControlLoop(plat)
    loop.start()
    try:
        deadline = time.monotonic() + 600
        while (done := plat.workflows.execution(execution["id"]))["status"] in ("PENDING", "RUNNING"):
            assert time.monotonic() < deadline, done
            time.sleep(0.3)
    finally:
        loop.stop()
    assert done["status"] == "SUCCEEDED", (done["error"], done["cause"])
    output = done["output"]
    assert output["model"]["ref"] == "digits-wf:1" and output["best"]["trial"] == 1
    assert plat.tuning.get(output["tuning"])["status"] == "succeeded"


def test_the_tune_task_refuses_unknown_parameters(platform) -> None:
    from datetime import datetime, timezone

    from loopml.workflows.actions import TaskContext, TaskError, action_for

    ctx = TaskContext(platform, "exec-1", "1", "Tune", datetime.now(timezone.utc))
    with pytest.raises(TaskError, match="unknown Parameters epochs"):
        action_for("loopml:tune").start(ctx, {"dataset": "digits", "space": [LR], "epochs": 3})
    with pytest.raises(TaskError, match="Parameters.space is required"):
        action_for("loopml:tune").start(ctx, {"dataset": "digits"})
    assert platform.tuning.list() == []


@pytest.fixture
def store_platform(tmp_path, metadata_url, clean_env):
    p = Platform(Settings(home=tmp_path / "home", database_url=metadata_url))
    yield p
    p.close()


def test_a_trial_recorded_before_a_crash_gets_its_job_once_and_stop_ends_the_search(store_platform) -> None:
    """No worker runs here: the supervisor's steps alone, on SQLite and PostgreSQL. A trial row whose
    job was never queued (a crash in between) is queued on the next step under its derived id, never
    twice; a stop cancels the queued trial jobs and ends the search as stopped."""
    from loopml.tuning.advance import Advancer

    platform = store_platform
    register(platform, "digits", "sample:digits")
    create_tuning(platform, name="cr", dataset="digits", model="cnn", space=[LR], strategy="random",
                  max_trials=3, parallel=2, params={"epochs": 1})
    platform.tuning.add_trial("cr", 1, "cr-001", {"learning_rate": 0.001})  # …and the control plane died
    first = Advancer(platform)
    assert first.step("cr")  # queued a new trial beside the recovered one
    trials = platform.tuning.trials("cr")
    assert [(t["number"], t["job_id"], t["state"]) for t in trials] == [(1, "cr-001", "running"), (2, "cr-002", "running")]
    job = platform.jobs.get("cr-001")
    assert (job["status"], job["spec"]["hparams"]["learning_rate"], job["spec"]["register"]) == ("queued", 0.001, False)
    assert not Advancer(platform).step("cr")  # another control plane: the same two jobs, no third (parallel 2)
    assert sorted(j["id"] for j in platform.jobs.list()) == ["cr-001", "cr-002"]

    platform.tuning.request_stop("cr")
    first.step("cr")
    assert [j["status"] for j in platform.jobs.list()] == ["cancelled", "cancelled"]
    record = get_tuning(platform, "cr")
    assert record["status"] == "stopped" and [t["state"] for t in record["trials"]] == ["stopped", "stopped"]
    assert record["reason"] == "stopped by request"


def test_warm_start_copies_the_parents_fitting_trials_into_the_new_search(platform) -> None:
    from loopml.tuning.study import rebuild

    register(platform, "digits", "sample:digits")
    create_tuning(platform, name="parent", dataset="digits", model="cnn", space=[LR, "filters=choice(4,8)"],
                  max_trials=3, params={"epochs": 1})
    for number, params, state, value in ((1, {"learning_rate": 1e-3, "filters": 4}, "complete", 0.9),
                                         (2, {"learning_rate": 5e-2, "filters": 8}, "complete", 0.5),  # lr outside
                                         (3, {"learning_rate": 2e-3, "filters": 8}, "pruned", 0.3)):
        platform.tuning.add_trial("parent", number, f"parent-00{number}", params)
        platform.tuning.update_trial("parent", number, state=state, value=value)
    platform.tuning.finish("parent", "succeeded")

    child = create_tuning(platform, name="child", dataset="digits", model="cnn", space=[LR, "filters=choice(4,8)"],
                          max_trials=2, params={"epochs": 1}, warm_start=["parent"])
    assert child["spec"]["warm_trials"] == [{"params": {"learning_rate": 1e-3, "filters": 4}, "value": 0.9,
                                             "from": "parent#1"}]
    study = rebuild("child", child["spec"], []).study
    assert [(t.params, t.value) for t in study.trials] == [({"learning_rate": 1e-3, "filters": 4}, 0.9)]

    with pytest.raises(InvalidInput, match="optimised val_accuracy, not val_loss"):
        create_tuning(platform, name="c2", dataset="digits", model="cnn", space=[LR], objective="val_loss",
                      warm_start=["parent"])
    with pytest.raises(InvalidInput, match="no completed trial of parent lies in this search space"):
        create_tuning(platform, name="c3", dataset="digits", model="cnn", space=["learning_rate=uniform(0.1,0.2)"],
                      warm_start=["parent"])


def test_trials_carry_the_tuning_jobs_resources_and_delete_keeps_their_jobs(store_platform) -> None:
    """No worker runs: the supervisor's steps alone, on SQLite and PostgreSQL."""
    from loopml.core.errors import Conflict, NotFound
    from loopml.tuning.advance import Advancer
    from loopml.tuning.service import delete_tuning

    platform = store_platform
    register(platform, "digits", "sample:digits")
    record = create_tuning(platform, name="rs", dataset="digits", model="cnn", space=[LR], strategy="random",
                           max_trials=2, parallel=2, params={"epochs": 1}, resources={"cpus": 2, "memory_gb": 3})
    assert record["spec"]["resources"] == {"cpus": 2, "memory_gb": 3, "gpus": 0}
    advancer = Advancer(platform)
    advancer.step("rs")
    assert [(j["id"], j["spec"]["resources"]) for j in sorted(platform.jobs.list(), key=lambda j: j["id"])] == [
        ("rs-001", {"cpus": 2, "memory_gb": 3, "gpus": 0}), ("rs-002", {"cpus": 2, "memory_gb": 3, "gpus": 0})]
    with pytest.raises(InvalidInput, match="resource cpus must be more than 0"):
        create_tuning(platform, name="bad", dataset="digits", model="cnn", space=[LR], resources={"cpus": 0})

    with pytest.raises(Conflict, match="tuning job 'rs' is running; stop it first"):
        delete_tuning(platform, "rs")
    platform.tuning.request_stop("rs")
    advancer.step("rs")
    assert platform.tuning.get("rs")["status"] == "stopped"
    assert delete_tuning(platform, "rs") == {"name": "rs", "deleted": True, "trials": 2,
                                             "kept_jobs": ["rs-001", "rs-002"]}
    with pytest.raises(NotFound):
        platform.tuning.get("rs")
    assert sorted(j["id"] for j in platform.jobs.list()) == ["rs-001", "rs-002"]  # ordinary jobs, kept
    assert platform.tuning.list() == []


def test_tuning_delete_through_the_cli_and_http(cli, live_server, platform) -> None:
    platform.tuning.create("done", {"objective": "val_accuracy"})
    platform.tuning.finish("done", "failed", reason="no trial completed")
    deleted = cli("tuning", "delete", "done")
    assert deleted.exit_code == 0 and "deleted tuning job done" in deleted.stdout
    _one_line(cli("tuning", "delete", "done"), 2, "tuning job 'done' not found")
    platform.tuning.create("busy", {"objective": "val_accuracy"})
    platform.tuning.request_stop("busy")  # stopping: still active
    _one_line(cli("tuning", "delete", "busy"), 2, "tuning job 'busy' is stopping; stop it first")
    with httpx.Client(base_url=live_server) as http:
        busy = http.delete("/tuning/busy")
        assert busy.status_code == 409 and busy.json()["code"] == "conflict" and "'busy'" in busy.json()["message"]
        platform.tuning.finish("busy", "stopped")
        gone = http.delete("/tuning/busy")
        assert gone.status_code == 200 and gone.json() == {"name": "busy", "deleted": True, "trials": 0,
                                                           "kept_jobs": []}
        assert http.get("/tuning/busy").status_code == 404


def test_the_tune_task_passes_resources_to_every_trial(platform) -> None:
    from datetime import datetime, timezone

    from loopml.workflows.actions import TaskContext, action_for

    register(platform, "digits", "sample:digits")
    ctx = TaskContext(platform, "exec-2", "1", "Tune", datetime.now(timezone.utc))
    handle = action_for("loopml:tune").start(ctx, {"dataset": "digits", "space": [LR], "max_trials": 1,
                                                   "resources": {"cpus": 2, "memory_gb": 4}})
    assert platform.tuning.get(handle["tuning"])["spec"]["resources"] == {"cpus": 2, "memory_gb": 4, "gpus": 0}
