"""Quality against ground truth: accuracy, per-class precision/recall/F1, confusion matrix.

Works on label strings (true labels uploaded by users joined with captured predictions), unlike
models/metrics.py which works on class indices and probabilities. Labels outside
``class_names`` (a class only the labels know, a typo) are appended as their own classes so
every row is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from loopml.core.errors import InvalidInput
from loopml.core.timeutil import iso, parse_iso
from loopml.models.metrics import per_class_metrics


def _classes(class_names: Sequence[str], *label_lists: Sequence[str]) -> list[str]:
    classes = [str(c) for c in class_names]
    known = set(classes)
    extra = sorted({str(v) for labels in label_lists for v in labels} - known)
    return classes + extra


def quality(y_true: Sequence[str], y_pred: Sequence[str], class_names: Sequence[str]) -> dict[str, Any]:
    """→ ``{"n", "accuracy" (None when n = 0), "classes", "per_class": {class: {"precision",
    "recall", "f1", "support"}}, "confusion_matrix" (rows = true, columns = predicted, in
    ``classes`` order), "macro_f1"}``."""
    if len(y_true) != len(y_pred):
        raise InvalidInput(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    truth = [str(v) for v in y_true]
    pred = [str(v) for v in y_pred]
    classes = _classes(class_names, truth, pred)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    if truth:
        np.add.at(cm, (np.array([index[v] for v in truth]), np.array([index[v] for v in pred])), 1)
    per_class = per_class_metrics(cm, classes)
    n = len(truth)
    supported = [c["f1"] for c in per_class.values() if c["support"]]
    return {"n": n,
            "accuracy": round(float(np.trace(cm)) / n, 4) if n else None,
            "classes": classes,
            "per_class": per_class,
            "confusion_matrix": cm.tolist(),
            "macro_f1": round(float(np.mean(supported)), 4) if supported else None}


def _as_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, np.datetime64):
        return datetime.fromtimestamp(value.astype("datetime64[us]").astype(np.int64) / 1e6, timezone.utc)
    try:
        t = parse_iso(str(value))
    except ValueError:
        raise InvalidInput(f"not an ISO time: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def quality_over_windows(times: Sequence[Any], y_true: Sequence[str], y_pred: Sequence[str],
                         class_names: Sequence[str], window: timedelta) -> list[dict[str, Any]]:
    """One ``quality`` dict (+ ``"start"``, ``"end"`` ISO strings) per time window holding rows.

    Windows are aligned to multiples of ``window`` since the Unix epoch (an hourly window starts
    on the hour) and listed oldest first; every window reports the same class list.
    """
    if not len(times) == len(y_true) == len(y_pred):
        raise InvalidInput(f"times, true labels and predictions differ in length "
                           f"({len(times)}, {len(y_true)}, {len(y_pred)})")
    seconds = window.total_seconds()
    if seconds <= 0:
        raise InvalidInput(f"the quality window must be positive, got {window}")
    classes = _classes(class_names, [str(v) for v in y_true], [str(v) for v in y_pred])
    buckets: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        buckets.setdefault(int(_as_time(t).timestamp() // seconds), []).append(i)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    out = []
    for b in sorted(buckets):
        rows = buckets[b]
        q = quality([y_true[i] for i in rows], [y_pred[i] for i in rows], classes)
        start = epoch + timedelta(seconds=b * seconds)
        out.append({"start": iso(start), "end": iso(start + window), **q})
    return out


def shadow_comparison(y_true: Sequence[str | None], production_pred: Sequence[str],
                      shadow_pred: Sequence[str], class_names: Sequence[str]) -> dict[str, Any]:
    """Side by side, on the same requests: both variants' quality (rows with a true label) and
    how often the two predictions agree (all rows). ``y_true`` items may be None (unlabelled)."""
    if not len(y_true) == len(production_pred) == len(shadow_pred):
        raise InvalidInput("true labels, production and shadow predictions differ in length")
    labelled = [i for i, t in enumerate(y_true) if t is not None]
    truth = [str(y_true[i]) for i in labelled]
    prod = quality(truth, [str(production_pred[i]) for i in labelled], class_names)
    shadow = quality(truth, [str(shadow_pred[i]) for i in labelled], class_names)
    n = len(production_pred)
    agree = sum(1 for a, b in zip(production_pred, shadow_pred) if str(a) == str(b))
    delta = (round(shadow["accuracy"] - prod["accuracy"], 4)
             if shadow["accuracy"] is not None and prod["accuracy"] is not None else None)
    return {"n": n, "labelled": len(labelled),
            "agreement": round(agree / n, 4) if n else None,
            "production": prod, "shadow": shadow, "accuracy_delta": delta}
