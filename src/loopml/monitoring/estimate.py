"""Accuracy before labels: confidence-based performance estimation (CBPE, as NannyML calls it).

A classifier's top-class confidence is a probability of being right only if it is calibrated;
neural networks are usually over-confident. So the baseline's HELD-OUT rows (labels known, never
trained on) fit a calibration map: isotonic regression of "was the prediction right" on the
confidence (monotone, no shape assumed). On a window without labels, each row's calibrated
confidence is the chance its prediction is right, and their mean estimates the window's accuracy.

The interval adds two independent errors: the window's own luck (the realised accuracy of n rows
is a sum of Bernoullis: Σ c(1-c)/n²) and the calibration's (each isotonic block's accuracy was
measured on w held-out rows). It does NOT cover a broken premise: the estimate holds while the
model's confidences keep their meaning (covariate shift), not when the meaning of the inputs
changes (concept shift) or inputs leave what the model has seen at all (an inverted image read
confidently as some digit) — labels, when they arrive, are the check, and the quality section
shows both side by side. ``check_estimate`` turns an interval wholly below the monitor's accuracy
floor into the run's "quality.estimated_accuracy" violation (how it and measured accuracy interact:
its docstring).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import norm

from loopml.core.errors import InvalidInput

CALIBRATION_VERSION = 1
MIN_CALIBRATION_ROWS = 50  # fewer held-out rows than this fit no useful map: no estimate
MIN_WINDOW_ROWS = 50  # the interval is a normal approximation: below this many rows it is not one


def fit_calibration(confidence: Any, correct: Any) -> dict[str, Any] | None:
    """The calibration map from held-out rows: their top-class confidences and whether the
    prediction was right. → ``{"version", "method": "isotonic", "n", "accuracy", "knots": [[conf,
    accuracy, rows], …]}`` (one knot per isotonic block, at its mean confidence) or None with
    fewer than MIN_CALIBRATION_ROWS usable rows."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    ok = np.isfinite(c) & np.isfinite(y)
    c, y = c[ok], y[ok]
    if c.size < MIN_CALIBRATION_ROWS:
        return None
    # fit on the distinct confidences, weighted by their rows: rows of one confidence (a confident
    # model answers 1.0 for many) must share one block, or the map gives 1.0 two values
    values, inverse, rows = np.unique(c, return_inverse=True, return_counts=True)
    right = np.bincount(inverse, weights=y, minlength=values.size)
    conf_sum = np.bincount(inverse, weights=c, minlength=values.size)
    fitted = isotonic_regression(right / rows, weights=rows.astype(np.float64), increasing=True)
    blocks = np.asarray(fitted.blocks)  # start index of each block, then values.size
    knots = []
    for start, stop in zip(blocks[:-1], blocks[1:]):
        w = int(rows[start:stop].sum())
        knots.append([round(float(conf_sum[start:stop].sum() / w), 6), round(float(fitted.x[start]), 6), w])
    return {"version": CALIBRATION_VERSION, "method": "isotonic", "n": int(c.size),
            "accuracy": round(float(y.mean()), 6), "knots": knots}


def calibrated(calibration: dict[str, Any], confidence: Any) -> tuple[np.ndarray, np.ndarray]:
    """(chance each row's prediction is right, index of the knot each row is nearest to)."""
    knots = np.asarray(calibration["knots"], dtype=np.float64).reshape(-1, 3)
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    c = c[np.isfinite(c)]
    p = np.interp(c, knots[:, 0], knots[:, 1])  # clamps beyond the first/last knot
    nearest = np.clip(np.searchsorted(knots[:, 0], c), 0, len(knots) - 1)
    left = np.clip(nearest - 1, 0, len(knots) - 1)
    nearest = np.where(np.abs(c - knots[left, 0]) < np.abs(c - knots[nearest, 0]), left, nearest)
    return p, nearest


def estimate_accuracy(calibration: dict[str, Any] | None, confidence: Any, *,
                      level: float = 0.95) -> dict[str, Any] | None:
    """The window's estimated accuracy with a ``level`` interval, from its top-class confidences.
    → ``{"accuracy", "low", "high", "level", "n", "method": "cbpe"}``; None without a calibration
    map (a baseline written before estimates existed) or with fewer than MIN_WINDOW_ROWS rows."""
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"the interval level must be between 0 and 1, got {level!r}")
    if not calibration or not calibration.get("knots"):
        return None
    p, nearest = calibrated(calibration, confidence)
    n = int(p.size)
    if n < MIN_WINDOW_ROWS:
        return None
    knots = np.asarray(calibration["knots"], dtype=np.float64).reshape(-1, 3)
    estimate = float(p.mean())
    var_window = float(np.sum(p * (1.0 - p))) / n**2
    share = np.bincount(nearest, minlength=len(knots)) / n
    rows = np.maximum(knots[:, 2], 1.0)
    smoothed = (knots[:, 1] * rows + 0.5) / (rows + 1.0)  # a block of all-right rows is not certain
    var_calibration = float(np.sum(share**2 * smoothed * (1.0 - smoothed) / rows))
    half = float(norm.ppf(0.5 + level / 2.0)) * math.sqrt(var_window + var_calibration)
    return {"accuracy": round(estimate, 4), "low": round(max(0.0, estimate - half), 4),
            "high": round(min(1.0, estimate + half), 4), "level": level, "n": n, "method": "cbpe"}


def why_no_estimate(baseline: dict[str, Any], rows: int, model_ref: str) -> str | None:
    """One line saying why a window of ``rows`` rows on ``baseline`` gets no estimate; None when it
    gets one."""
    if "calibration" not in baseline:
        return (f"the baseline of {model_ref} predates accuracy estimates: rebuild it with "
                f"`loopml monitors baseline {model_ref}`")
    if not (baseline.get("calibration") or {}).get("knots"):
        note = (baseline.get("source") or {}).get("calibration") or "no calibration"
        return f"the baseline of {model_ref} has no calibration map ({note})"
    if rows < MIN_WINDOW_ROWS:
        return f"{rows} rows < {MIN_WINDOW_ROWS}"
    return None


def check_estimate(estimate: dict[str, Any], floor: float, *, labels_passed: bool = False) -> dict[str, Any]:
    """The accuracy floor against the estimate, as a drift-like item named
    "quality.estimated_accuracy": violated when the whole interval lies below the floor
    (``high < floor``: at level 0.95, 97.5 % one-sided confidence).

    It raises next to the measured check (drift.check_quality, "quality.accuracy"): the estimate
    judges every row of the window as soon as it is served, the measured accuracy only the rows
    whose labels have arrived — both can raise. Measured accuracy is the stronger evidence: when
    enough labels judged the window and passed it (``labels_passed``), the estimate does not raise
    (``"overruled": True``): its premise — confidences keep their meaning — is what the labels
    contradict."""
    below = estimate["high"] < float(floor)
    return {"name": "quality.estimated_accuracy", "type": "quality",
            "statistics": {k: estimate[k] for k in ("accuracy", "low", "high", "level")},
            "thresholds": {"accuracy": float(floor)}, "violated": bool(below and not labels_passed),
            "overruled": bool(below and labels_passed), "n_baseline": None, "n_current": estimate["n"]}
