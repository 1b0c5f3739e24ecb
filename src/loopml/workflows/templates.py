"""Workflow templates: ordinary, editable ASL definitions generated from a few parameters.

``render(platform, "retrain", {"dataset": "mnist", "model": "cnn", "endpoint": "mnist"})``
reads the endpoint to learn which model NAME@ALIAS it serves, then returns the definition:

    CheckInput ─(input has "dataset")─────────────┐
        └─ UseDefaultDataset (Pass) ──────────────┤
    Train (register: false) → Evaluate (challenger vs champion) → Decide
        ├─ promote → Register → Promote (set-alias) → Rollout (deploy, waits) → Promoted
        └─ else    → KeepChampion

With ``monitor`` (the closed loop: an alert trigger on that monitor starts the workflow) the
definition starts instead with

    CollectLabelled (the monitor's labelled captured requests → a new version of the dataset;
                     retried on Monitor.NotEnoughLabels until labels arrive)
        → UseLabelledData ($.dataset = that exact version) → Train …
"""

from __future__ import annotations

from typing import Any, Callable

from loopml.core.errors import InvalidInput, NotFound
from loopml.platform import Platform
from loopml.registry.champion import METRICS
from loopml.registry.refs import ModelRef

RETRAIN_PARAMS = ("dataset", "model", "endpoint", "min_improvement", "metric", "epochs", "monitor", "min_labels",
                  "label_retry_s")
LABEL_RETRY_S = 10  # how often CollectLabelled looks for labels again
LABEL_ATTEMPTS = 60


def render(platform: Platform, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """The ASL definition (a plain dict) of ``template`` for ``params``; InvalidInput names what is wrong."""
    builder = TEMPLATES.get(template)
    if builder is None:
        raise InvalidInput(f"unknown workflow template {template!r}; available: {', '.join(sorted(TEMPLATES))}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput(f"template {template}: parameters must be an object")
    return builder(platform, params)


def _required(params: dict[str, Any], key: str, template: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"template {template}: parameter {key!r} is required (a non-empty string)")
    return value.strip()


def served_alias(platform: Platform, endpoint: str) -> tuple[str, str]:
    """(model NAME, ALIAS) the endpoint's primary variant follows; a pinned version is refused."""
    try:
        record = platform.endpoints.get(endpoint)
    except NotFound:
        raise InvalidInput(f"template retrain: endpoint {endpoint!r} not found; create it first with "
                           f"loopml endpoints create {endpoint} --model MODEL@ALIAS") from None
    variants = (record.get("spec") or {}).get("variants") or []
    primary = next((v for v in variants if v.get("name") == "primary"), variants[0] if variants else None)
    if primary is None:
        raise InvalidInput(f"template retrain: endpoint {endpoint} has no model variant")
    if not primary.get("alias"):
        name = primary["model"]
        raise InvalidInput(f"endpoint {endpoint} serves {name}:{primary.get('version')}; retraining moves an "
                           f"alias — create the endpoint with --model {name}@production")
    return primary["model"], primary["alias"]


def _retrain(platform: Platform, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(RETRAIN_PARAMS))
    if unknown:
        raise InvalidInput(f"template retrain: unknown parameter(s) {', '.join(unknown)}; "
                           f"valid: {', '.join(RETRAIN_PARAMS)}")
    dataset = _required(params, "dataset", "retrain")
    model_template = _required(params, "model", "retrain")
    endpoint = _required(params, "endpoint", "retrain")
    metric = params.get("metric") or "accuracy"
    if metric not in METRICS:
        raise InvalidInput(f"template retrain: metric {metric!r} must be one of {', '.join(METRICS)}")
    min_improvement = params.get("min_improvement")
    min_improvement = 0.005 if min_improvement is None else min_improvement
    try:
        min_improvement = float(min_improvement)
    except (TypeError, ValueError):
        raise InvalidInput(f"template retrain: min_improvement {params['min_improvement']!r} is not a number") from None
    epochs = params.get("epochs")
    if epochs is not None:
        try:
            epochs = int(epochs)
        except (TypeError, ValueError):
            raise InvalidInput(f"template retrain: epochs {params['epochs']!r} is not a whole number") from None
        if epochs < 1:
            raise InvalidInput(f"template retrain: epochs must be at least 1, got {epochs}")
    monitor, min_labels, label_retry_s = _monitor_params(platform, params)
    name, alias = served_alias(platform, endpoint)
    champion = str(ModelRef(name=name, alias=alias))

    train_params: dict[str, Any] = {"dataset.$": "$.dataset", "model": model_template, "register_as": name,
                                    "register": False}
    if epochs is not None:
        train_params["params"] = {"epochs": epochs}
    source = (f"the requests of endpoint {endpoint} labelled through monitor {monitor} (added to {dataset})"
              if monitor else f"the newest {dataset} (or the input's \"dataset\")")
    definition = {
        "Comment": (f"Retrain {name} ({model_template}) on {source}, "
                    f"compare it with {champion} on the same test rows, and when its {metric} is at least "
                    f"{min_improvement:g} better register it, move {alias} to it and wait until endpoint "
                    f"{endpoint} serves it. Generated by template retrain; edit freely."),
        "StartAt": "CheckInput",
        "States": {
            "CheckInput": {
                "Type": "Choice",
                "Comment": "an execution input {\"dataset\": \"NAME[:VERSION]\"} overrides the default dataset",
                "Choices": [{"Variable": "$.dataset", "IsPresent": True, "Next": "Train"}],
                "Default": "UseDefaultDataset",
            },
            "UseDefaultDataset": {
                "Type": "Pass", "Comment": "the newest version of the dataset",
                "Result": dataset, "ResultPath": "$.dataset", "Next": "Train",
            },
            "Train": {
                "Type": "Task", "Resource": "loopml:train",
                "Comment": "trains and evaluates a challenger; registers nothing yet (model_ref job:<id>)",
                "Parameters": train_params,
                "ResultPath": "$.train",
                "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1, "IntervalSeconds": 10,
                           "BackoffRate": 2.0}],
                "Next": "Evaluate",
            },
            "Evaluate": {
                "Type": "Task", "Resource": "loopml:evaluate",
                "Comment": "challenger and champion on the same rows; a missing champion means promote",
                "Parameters": {"models": {"challenger.$": "$.train.model_ref", "champion": champion},
                               "dataset.$": "$.train.dataset", "metric": metric,
                               "min_improvement": min_improvement},
                "ResultPath": "$.evaluation",
                "Next": "Decide",
            },
            "Decide": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.evaluation.promote", "BooleanEquals": True, "Next": "Register"}],
                "Default": "KeepChampion",
            },
            "Register": {
                "Type": "Task", "Resource": "loopml:register",
                "Parameters": {"job.$": "$.train.job_id", "name": name},
                "ResultPath": "$.registered",
                "Next": "Promote",
            },
            "Promote": {
                "Type": "Task", "Resource": "loopml:set-alias",
                "Parameters": {"model": name, "alias": alias, "version.$": "$.registered.version"},
                "ResultPath": "$.promotion",
                "Next": "Rollout",
            },
            "Rollout": {
                "Type": "Task", "Resource": "loopml:deploy",
                "Comment": f"waits until endpoint {endpoint} serves the new version",
                "Parameters": {"endpoint": endpoint},
                "ResultPath": "$.deployment",
                "Next": "Promoted",
            },
            "Promoted": {
                "Type": "Pass",
                "Parameters": {"promoted": True, "model": name, "alias": alias,
                               "version.$": "$.registered.version", "ref.$": "$.registered.ref",
                               "endpoint": endpoint, "dataset.$": "$.train.dataset",
                               "reason.$": "$.evaluation.reason", "improvement.$": "$.evaluation.improvement"},
                "End": True,
            },
            "KeepChampion": {
                "Type": "Pass",
                "Parameters": {"promoted": False, "champion": champion, "challenger.$": "$.train.model_ref",
                               "dataset.$": "$.train.dataset", "reason.$": "$.evaluation.reason",
                               "improvement.$": "$.evaluation.improvement"},
                "End": True,
            },
        },
    }
    if monitor:
        states = definition["States"]
        del states["CheckInput"], states["UseDefaultDataset"]
        definition["StartAt"] = "CollectLabelled"
        definition["States"] = {**_collect_labelled(monitor, dataset, min_labels, label_retry_s), **states}
    return definition


def _monitor_params(platform: Platform, params: dict[str, Any]) -> tuple[str | None, int, int]:
    """(monitor or None, min_labels, label_retry_s); the monitor must exist."""
    monitor = params.get("monitor")
    if monitor is not None:
        monitor = _required(params, "monitor", "retrain")
        try:
            platform.monitors.get(monitor)
        except NotFound:
            raise InvalidInput(f"template retrain: monitor {monitor!r} not found; create it first with "
                               f"loopml monitors create {monitor} --endpoint ENDPOINT") from None
    elif params.get("min_labels") is not None or params.get("label_retry_s") is not None:
        raise InvalidInput("template retrain: min_labels and label_retry_s need a monitor")
    values = []
    for key, default in (("min_labels", 100), ("label_retry_s", LABEL_RETRY_S)):
        value = params.get(key)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() \
                or int(value) < 1:
            raise InvalidInput(f"template retrain: {key} {params[key]!r} must be a whole number >= 1")
        values.append(int(value))
    return monitor, values[0], values[1]


def _collect_labelled(monitor: str, dataset: str, min_labels: int, retry_s: int) -> dict[str, Any]:
    return {
        "CollectLabelled": {
            "Type": "Task", "Resource": "loopml:labelled-data",
            "Comment": (f"monitor {monitor}'s labelled captured requests → a new version of {dataset}; "
                        f"waits (retries every {retry_s} s) until {min_labels} labelled requests are there"),
            "Parameters": {"monitor": monitor, "dataset": dataset, "extend": True, "min_labels": min_labels},
            "ResultPath": "$.labelled",
            "Retry": [{"ErrorEquals": ["Monitor.NotEnoughLabels"], "IntervalSeconds": retry_s,
                       "BackoffRate": 1.0, "MaxAttempts": LABEL_ATTEMPTS}],
            "Next": "UseLabelledData",
        },
        "UseLabelledData": {
            "Type": "Pass", "Comment": "train on exactly the version just registered",
            "InputPath": "$.labelled.ref", "ResultPath": "$.dataset", "Next": "Train",
        },
    }


TEMPLATES: dict[str, Callable[[Platform, dict[str, Any]], dict[str, Any]]] = {"retrain": _retrain}
