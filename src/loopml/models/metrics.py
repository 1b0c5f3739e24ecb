"""Classification metrics of a model's answers: accuracy, confusion matrix, per-class P/R/F1 (training
evaluates the test split with them, monitoring the labelled traffic)."""

from __future__ import annotations

from typing import Any

import numpy as np


def per_class_metrics(cm: np.ndarray, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true)."""
    per_class = {}
    for i, name in enumerate(labels):
        tp = int(cm[i, i])
        predicted, actual = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": actual}
    return per_class


def classification_report(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict[str, Any]:
    y_pred = proba.argmax(axis=1)
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = per_class_metrics(cm, labels)
    n = max(len(y_true), 1)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y_true)), y_true], eps, 1.0)))) if len(y_true) else 0.0
    return {"accuracy": round(float((y_pred == y_true).sum() / n), 4),
            "loss": round(loss, 4) if np.isfinite(loss) else None,
            "samples": int(len(y_true)), "labels": labels, "confusion_matrix": cm.tolist(),
            "per_class": per_class,
            "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])) if per_class else 0.0, 4)}
