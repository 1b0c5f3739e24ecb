"""The "retrain" workflow template: rendered from a real endpoint record, valid ASL, and its data
flow checked by running it through the engine's simulator with stand-in task results."""

from __future__ import annotations

import json

import pytest

from loopml.core.errors import InvalidInput
from loopml.serving.service import create_endpoint
from loopml.workflows.asl import load_definition, validate_definition
from loopml.workflows.engine import simulate
from loopml.workflows.templates import render

PARAMS = {"dataset": "mnist", "model": "cnn", "endpoint": "mnist"}


@pytest.fixture
def plat(platform):
    """mnist-cnn:1 with alias production, served by endpoint mnist (alias) and pinned (version)."""
    platform.models.add_version("mnist-cnn", 1, job_id=None, dataset="mnist:1", kind="image", template="cnn",
                                hparams={}, metrics={}, lineage={}, runtimes=["onnx"],
                                artifact_prefix="models/mnist-cnn/job-x")
    platform.models.set_alias("mnist-cnn", "production", 1)
    create_endpoint(platform, "mnist", {"model": "mnist-cnn@production"})
    create_endpoint(platform, "pinned", {"model": "mnist-cnn:1"})
    return platform


def test_retrain_renders_valid_editable_asl(plat):
    definition = render(plat, "retrain", {**PARAMS, "epochs": 2})
    validate_definition(definition)
    assert load_definition(json.dumps(definition)) == definition  # plain JSON, round-trips
    assert "mnist-cnn@production" in definition["Comment"]
    states = definition["States"]
    assert definition["StartAt"] == "CheckInput"
    train = states["Train"]
    assert train["Resource"] == "loopml:train" and train["ResultPath"] == "$.train"
    assert train["Parameters"] == {"dataset.$": "$.dataset", "model": "cnn", "register_as": "mnist-cnn",
                                   "register": False, "params": {"epochs": 2}}
    assert train["Retry"][0]["ErrorEquals"] == ["States.TaskFailed"] and train["Retry"][0]["MaxAttempts"] == 1
    evaluate = states["Evaluate"]
    assert evaluate["Parameters"] == {"models": {"challenger.$": "$.train.model_ref", "champion": "mnist-cnn@production"},
                                      "dataset.$": "$.train.dataset", "metric": "accuracy",
                                      "min_improvement": 0.005}
    assert states["Decide"]["Choices"][0] == {"Variable": "$.evaluation.promote", "BooleanEquals": True,
                                              "Next": "Register"}
    assert states["Decide"]["Default"] == "KeepChampion"
    assert states["Register"]["Parameters"] == {"job.$": "$.train.job_id", "name": "mnist-cnn"}
    assert states["Promote"]["Parameters"] == {"model": "mnist-cnn", "alias": "production",
                                               "version.$": "$.registered.version"}
    assert states["Rollout"]["Parameters"] == {"endpoint": "mnist"}
    assert states["KeepChampion"]["End"] is True and states["Promoted"]["End"] is True


def test_defaults_and_options(plat):
    states = render(plat, "retrain", {**PARAMS, "metric": "macro_f1", "min_improvement": "0.01"})["States"]
    assert "params" not in states["Train"]["Parameters"]  # the template's default epochs
    assert states["Evaluate"]["Parameters"]["metric"] == "macro_f1"
    assert states["Evaluate"]["Parameters"]["min_improvement"] == 0.01


def fake_tasks(promote: bool, calls: list):
    def run(resource: str, payload):
        calls.append((resource, payload))
        if resource == "loopml:train":
            return {"job_id": "job-t1", "model_ref": "job:job-t1", "registered": False,
                    "dataset": payload["dataset"] + ":4" if ":" not in payload["dataset"] else payload["dataset"],
                    "metrics": {"test_accuracy": 0.98}}
        if resource == "loopml:evaluate":
            return {"promote": promote, "improvement": 0.006 if promote else 0.001,
                    "reason": "challenger accuracy 0.981 vs champion 0.975" + (": promote" if promote else ": keep")}
        if resource == "loopml:register":
            return {"name": payload["name"], "version": 5, "ref": f"{payload['name']}:5"}
        if resource == "loopml:set-alias":
            return {"name": payload["model"], "alias": payload["alias"], "version": payload["version"], "previous": 4}
        if resource == "loopml:deploy":
            return {"endpoint": payload["endpoint"], "served": {"primary": "mnist-cnn:5"}}
        raise AssertionError(resource)
    return run


def test_a_better_challenger_is_registered_promoted_and_rolled_out(plat):
    calls: list = []
    sim = simulate(render(plat, "retrain", PARAMS), {}, fake_tasks(True, calls))
    assert sim.execution.status == "SUCCEEDED", sim.execution.error
    assert [r for r, _ in calls] == ["loopml:train", "loopml:evaluate", "loopml:register", "loopml:set-alias",
                                     "loopml:deploy"]
    payloads = dict(calls)
    assert payloads["loopml:train"]["dataset"] == "mnist"  # the default: newest version
    assert payloads["loopml:evaluate"]["models"] == {"challenger": "job:job-t1", "champion": "mnist-cnn@production"}
    assert payloads["loopml:evaluate"]["dataset"] == "mnist:4"
    assert payloads["loopml:register"] == {"job": "job-t1", "name": "mnist-cnn"}
    assert payloads["loopml:set-alias"] == {"model": "mnist-cnn", "alias": "production", "version": 5}
    out = sim.execution.output
    assert out["promoted"] is True and out["version"] == 5 and out["ref"] == "mnist-cnn:5"
    assert out["endpoint"] == "mnist" and out["reason"].endswith("promote")


def test_a_weaker_challenger_keeps_the_champion_and_input_picks_the_dataset(plat):
    calls: list = []
    sim = simulate(render(plat, "retrain", PARAMS), {"dataset": "mnist:7"}, fake_tasks(False, calls))
    assert sim.execution.status == "SUCCEEDED", sim.execution.error
    assert [r for r, _ in calls] == ["loopml:train", "loopml:evaluate"]
    assert calls[0][1]["dataset"] == "mnist:7"
    out = sim.execution.output
    assert out["promoted"] is False and out["champion"] == "mnist-cnn@production"
    assert out["challenger"] == "job:job-t1" and out["reason"].endswith("keep")


def test_with_a_monitor_it_waits_for_labelled_traffic_and_trains_on_exactly_that_version(plat):
    from loopml.workflows.paths import WorkflowError

    plat.monitors.create("mnist-mon", endpoint="mnist", variant=None, schedule=None, tz="UTC", window_s=3600,
                         min_samples=200, thresholds={}, webhooks=[], next_run_at=None)
    definition = render(plat, "retrain", {**PARAMS, "dataset": "mnist-live", "monitor": "mnist-mon",
                                          "min_labels": 50, "label_retry_s": 2})
    validate_definition(definition)
    states = definition["States"]
    assert definition["StartAt"] == "CollectLabelled" and "CheckInput" not in states
    collect = states["CollectLabelled"]
    assert collect["Resource"] == "loopml:labelled-data" and collect["ResultPath"] == "$.labelled"
    assert collect["Parameters"] == {"monitor": "mnist-mon", "dataset": "mnist-live", "extend": True,
                                     "min_labels": 50}
    assert collect["Retry"] == [{"ErrorEquals": ["Monitor.NotEnoughLabels"], "IntervalSeconds": 2,
                                 "BackoffRate": 1.0, "MaxAttempts": 60}]
    assert "monitor mnist-mon" in definition["Comment"]

    calls: list = []
    tasks = fake_tasks(True, calls)
    attempts = []

    def run(resource: str, payload):
        if resource == "loopml:labelled-data":
            attempts.append(payload)
            if len(attempts) < 3:
                raise WorkflowError("Monitor.NotEnoughLabels", f"{len(attempts)} labelled requests, 50 needed")
            return {"ref": "mnist-live:3", "rows": 900, "labelled": 300}
        return tasks(resource, payload)

    sim = simulate(definition, {"source": "loopml.monitor", "alert": {"id": "alert-1"}}, run)
    assert sim.execution.status == "SUCCEEDED", sim.execution.error
    assert len(attempts) == 3 and calls[0] == ("loopml:train", calls[0][1])
    assert calls[0][1]["dataset"] == "mnist-live:3"  # the version just registered, not "the newest"
    assert sim.execution.output["dataset"] == "mnist-live:3"

    with pytest.raises(InvalidInput, match="monitor 'nope' not found"):
        render(plat, "retrain", {**PARAMS, "monitor": "nope"})
    with pytest.raises(InvalidInput, match="need a monitor"):
        render(plat, "retrain", {**PARAMS, "min_labels": 5})
    with pytest.raises(InvalidInput, match="min_labels 0"):
        render(plat, "retrain", {**PARAMS, "monitor": "mnist-mon", "min_labels": 0})


def test_a_pinned_endpoint_is_refused_with_the_fix(plat):
    with pytest.raises(InvalidInput) as err:
        render(plat, "retrain", {**PARAMS, "endpoint": "pinned"})
    assert err.value.message == ("endpoint pinned serves mnist-cnn:1; retraining moves an alias — "
                                 "create the endpoint with --model mnist-cnn@production")


@pytest.mark.parametrize(("template", "params", "fragment"), [
    ("retrian", PARAMS, "unknown workflow template 'retrian'; available: retrain"),
    ("retrain", {"model": "cnn", "endpoint": "mnist"}, "parameter 'dataset' is required"),
    ("retrain", {"dataset": "mnist", "endpoint": "mnist"}, "parameter 'model' is required"),
    ("retrain", {"dataset": "mnist", "model": "cnn"}, "parameter 'endpoint' is required"),
    ("retrain", {**PARAMS, "epoch": 3}, "unknown parameter(s) epoch"),
    ("retrain", {**PARAMS, "metric": "auc"}, "metric 'auc'"),
    ("retrain", {**PARAMS, "epochs": "many"}, "epochs 'many'"),
    ("retrain", {**PARAMS, "epochs": 0}, "at least 1"),
    ("retrain", {**PARAMS, "min_improvement": "lots"}, "min_improvement 'lots'"),
    ("retrain", {**PARAMS, "endpoint": "nope"}, "endpoint 'nope' not found"),
    ("retrain", "dataset=mnist", "parameters must be an object"),
])
def test_unknown_templates_and_bad_parameters_are_named(plat, template, params, fragment):
    with pytest.raises(InvalidInput) as err:
        render(plat, template, params)
    assert fragment in err.value.message
