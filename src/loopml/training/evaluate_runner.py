"""Evaluates model versions side by side inside a worker: the same rows of one dataset version's
split for every model (the data is loaded once), then the registry's promote decision when the
models are labelled "challenger" and "champion". Needs no TensorFlow when the bundles have ONNX exports."""

from __future__ import annotations

import tempfile
from typing import Any, Callable

import numpy as np

from loopml.datasets.content import raw_inputs
from loopml.datasets.service import load_version
from loopml.models.metrics import classification_report
from loopml.platform import Platform
from loopml.core.jobstatus import CANCELLED, RUNNING, SUCCEEDED
from loopml.registry.champion import decide


class _Cancelled(Exception):
    pass


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None) -> None:
    job_id, spec = job["id"], job["spec"]
    ds = platform.datasets.get(spec["dataset_name"], spec["dataset_version"])
    content, splits = load_version(platform, ds)
    part = content.take(splits[spec["split"]])
    inputs = raw_inputs(part)
    truth = [str(v) for v in part.labels]
    print(f"dataset {ds['ref']} split {spec['split']}: {len(part)} rows", flush=True)
    if len(part) == 0:
        from loopml.core.errors import InvalidInput

        raise InvalidInput(f"dataset {ds['ref']} has no rows in its {spec['split']} split")

    results: dict[str, dict[str, Any]] = {}
    try:
        for label, entry in spec["models"].items():
            if platform.jobs.heartbeat(job_id, {"models_done": len(results), "models": len(spec["models"])}):
                raise _Cancelled()
            if "missing" in entry:
                print(f"{label}: {entry['ref']} — {entry['missing']}", flush=True)
                results[label] = {"ref": entry["ref"], "missing": entry["missing"]}
                continue
            results[label] = _evaluate_one(platform, label, entry, inputs, truth)
    except _Cancelled:
        print("cancelled", flush=True)
        sync_logs()
        platform.jobs.transition(job_id, CANCELLED, expect=[RUNNING], reason="cancelled by request")
        return

    result: dict[str, Any] = {"dataset": ds["ref"], "split": spec["split"], "rows": len(part),
                              "metric": spec["metric"], "min_improvement": spec["min_improvement"],
                              "results": results,
                              **decide(results, spec["metric"], spec["min_improvement"])}
    print(result["reason"], flush=True)
    sync_logs()
    platform.jobs.transition(job_id, SUCCEEDED, expect=[RUNNING], result=result)


def _evaluate_one(platform: Platform, label: str, entry: dict[str, Any], inputs: Any,
                  truth: list[str]) -> dict[str, Any]:
    from loopml.models.bundle import load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        platform.artifacts.download_dir(entry["artifact_prefix"], tmp, required=("loopml.json",))
        bundle = load_bundle(tmp, runtime="auto", trusted=bool(entry.get("trusted")))
        proba = bundle.predict_proba(inputs)
    labels = list(bundle.label_names)
    # classes the model never saw count as wrong answers: a zero-probability column each
    unseen = sorted(set(truth) - set(labels))
    if unseen:
        labels += unseen
        proba = np.concatenate([proba, np.zeros((len(proba), len(unseen)), dtype=proba.dtype)], axis=1)
    index = {c: i for i, c in enumerate(labels)}
    report = classification_report(np.array([index[c] for c in truth], dtype=np.int64), proba, labels)
    out: dict[str, Any] = {"ref": entry["ref"]}
    for key in ("name", "version", "resolved", "job_id"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    out.update({"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "loss": report["loss"],
                "rows": report["samples"], "runtime": bundle.runtime_name,
                # side by side per class (`loopml models compare --dataset`)
                "labels": report["labels"], "per_class": report["per_class"],
                "confusion_matrix": report["confusion_matrix"]})
    if unseen:
        out["unseen_classes"] = unseen
    print(f"{label}: {entry.get('resolved') or entry['ref']} ({bundle.runtime_name}) accuracy {out['accuracy']} "
          f"macro_f1 {out['macro_f1']} loss {out['loss']}", flush=True)
    return out
