"""Evaluates model versions side by side inside a worker: the same rows of one dataset version's
split for every model (the data is loaded once), then a promote decision when the models are
labelled "challenger" and "champion". Needs no TensorFlow when the bundles have ONNX exports."""

from __future__ import annotations

import tempfile
from typing import Any, Callable

import numpy as np

from loopml.datasets.content import raw_inputs
from loopml.datasets.service import load_version
from loopml.models.metrics import classification_report
from loopml.platform import Platform
from loopml.store.jobs_repo import CANCELLED, RUNNING, SUCCEEDED
from loopml.training.service import EVAL_METRICS

CHALLENGER, CHAMPION = "challenger", "champion"


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


def decide(results: dict[str, dict[str, Any]], metric: str, min_improvement: float) -> dict[str, Any]:
    """promote / improvement / reason for a challenger against a champion (improvement ≥ minimum)."""
    if CHALLENGER not in results or CHAMPION not in results:
        return {"promote": False, "improvement": None,
                "reason": f"nothing to decide: models labelled {CHALLENGER!r} and {CHAMPION!r} are both needed"}
    challenger, champion = results[CHALLENGER], results[CHAMPION]
    if "missing" in challenger or challenger.get(metric) is None:
        return {"promote": False, "improvement": None,
                "reason": f"challenger {challenger['ref']} has no {metric}: keep champion"}
    ch = float(challenger[metric])
    if "missing" in champion or champion.get(metric) is None:
        why = champion.get("missing") or f"champion has no {metric}"
        return {"promote": True, "improvement": None,
                "reason": f"no champion ({why}): promote challenger ({metric} {ch:.4g})"}
    cp = float(champion[metric])
    improvement = round(ch - cp if EVAL_METRICS[metric] == "higher" else cp - ch, 6)
    promote = improvement >= min_improvement - 1e-9
    sign = "≥" if promote else "<"
    verdict = "promote" if promote else "keep champion"
    return {"promote": promote, "improvement": improvement,
            "reason": f"challenger {metric} {ch:.4g} vs champion {cp:.4g} "
                      f"({improvement:+.4g} {sign} {min_improvement:g}): {verdict}"}
