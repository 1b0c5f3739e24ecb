"""Drift of a current window against the baseline: per feature statistics and violations.

Tests per feature
    numeric (input features, ``prediction.confidence``): PSI on the baseline's bins (a "missing"
        bin added when either side has NaN) and the two-sample KS test on the stored samples;
        with missing values a chi-square test on missing vs present joins the KS test.
    categorical (input features, ``prediction.class``, text ``tokens``): chi-square on the 2×K
        table and the Jensen–Shannon distance (base 2).
    ``embedding``: MMD² (RBF kernel, median bandwidth) with a permutation p-value.

Thresholds — what keeps false alarms at ≤ 1 window in 20 on unshifted traffic
    A feature is violated only when BOTH
    1. its p-value is below the Bonferroni-corrected threshold: ``ks_pvalue`` / ``chi2_pvalue`` /
       ``mmd_pvalue`` are family-wise levels, divided by m = the number of features compared in
       the window (so all tests of one window together false-alarm with probability ≤ 0.05 —
       the 1 in 20), and
    2. the effect size passes its floor: ``psi`` ≥ 0.2, ``js_distance`` ≥ 0.1, ``mmd`` ≥ 0.02.
       p-values alone grow tiny on large windows for shifts too small to matter (a 1 %
       wiggle over 100,000 rows); the floors demand the shift be visible. 0.2 sits between
       the usual PSI readings "0.1 = moderate" and "0.25 = major shift"; the expected PSI of
       two samples of the same distribution is ≈ (bins - 1)(1/n_b + 1/n_c) ≈ 0.05 at 10 bins
       and 200 rows, so the floor is 4× the pure-noise level. A JS distance of 0.1 between
       class mixes is e.g. one class of ten going from 10 % to ~22 % of the predictions;
       noise at 200 rows is ≈ 0.05–0.07. The MMD² floor 0.02 is ≈ 10× its noise level at
       200 rows for the median-heuristic kernel.
    Both conditions are tuned and checked in tests/test_monitoring_drift.py: 20 windows of
    200–700 rows of unshifted digits (images, classes, confidences, embeddings) and penguins
    (tabular) data give ≤ 1 violation, while inverted images, a changed class mix and a shifted
    numeric column are each caught at 200 rows.
    Fewer than ``min_samples`` (200) rows in the window → ``{"insufficient": true}``, statistics
    for the report but no violation. ``accuracy`` is an optional quality floor (None = off),
    checked by ``check_quality`` with a one-sided binomial test so a handful of labels cannot
    raise an alarm on their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats as sstats

from loopml.core.errors import InvalidInput
from loopml.monitoring.stats import chi2_test, js_distance, ks_test, mmd_test, psi

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "psi": 0.2,            # effect floor, numeric features
    "ks_pvalue": 0.05,     # family-wise level, Bonferroni-divided across the window's features
    "chi2_pvalue": 0.05,   # idem, categorical features
    "js_distance": 0.1,    # effect floor, categorical features
    "mmd_pvalue": 0.05,    # idem, embedding
    "mmd": 0.02,           # effect floor (MMD²), embedding
    "accuracy": None,      # quality floor (None = no floor)
    "min_samples": 200,    # rows a window needs before any violation is raised
}
_P_KEYS = ("ks_pvalue", "chi2_pvalue", "mmd_pvalue")
MISSING = "<missing>"


# --------------------------------------------------------------------------- thresholds


def validate_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    """User overrides checked and typed (InvalidInput naming the bad key/value); None values dropped."""
    out: dict[str, Any] = {}
    for key, value in (thresholds or {}).items():
        if key not in DEFAULT_THRESHOLDS:
            raise InvalidInput(f"unknown threshold {key!r}; known: {', '.join(DEFAULT_THRESHOLDS)}")
        if value is None:
            continue
        if key == "min_samples":
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"threshold min_samples must be a whole number ≥ 1, got {value!r}") from None
            if not (math.isfinite(number) and number.is_integer() and number >= 1):
                raise InvalidInput(f"threshold min_samples must be a whole number ≥ 1, got {value!r}")
            out[key] = int(number)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"threshold {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise InvalidInput(f"threshold {key} must be a finite number, got {value!r}")
        if key in _P_KEYS and not 0 < number <= 1:
            raise InvalidInput(f"threshold {key} is a p-value level: expected 0 < {key} ≤ 1, got {value!r}")
        if key in ("js_distance", "accuracy") and not 0 <= number <= 1:
            raise InvalidInput(f"threshold {key} must be between 0 and 1, got {value!r}")
        if key in ("psi", "mmd") and number < 0:
            raise InvalidInput(f"threshold {key} must be ≥ 0, got {value!r}")
        out[key] = number
    return out


def parse_thresholds(items: Iterable[str]) -> dict[str, Any]:
    """``["psi=0.3", "min_samples=500"]`` (the CLI's ``--threshold metric=value``) → validated dict."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"threshold {item!r} must look like metric=value (e.g. psi=0.25)")
        raw[key.strip()] = value.strip()
    return validate_thresholds(raw)


def effective_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_THRESHOLDS, **validate_thresholds(thresholds)}


# --------------------------------------------------------------------------- per feature


def _r(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return float(f"{float(x):.{digits}g}")


def _numeric_drift(name: str, base: Mapping, cur: Mapping, thr: Mapping, m: int) -> dict:
    b_counts = list(base.get("counts") or [])
    c_counts = list(cur.get("counts") or [])
    b_missing, c_missing = int(base.get("missing") or 0), int(cur.get("missing") or 0)
    n_b, n_c = int(base.get("n") or 0), int(cur.get("n") or 0)
    with_missing = b_missing > 0 or c_missing > 0
    size = max(len(b_counts), len(c_counts))
    b_counts += [0] * (size - len(b_counts))
    c_counts += [0] * (size - len(c_counts))
    if with_missing:
        b_counts, c_counts = b_counts + [b_missing], c_counts + [c_missing]
    value_psi = psi(b_counts, c_counts)
    ks_stat, ks_p = ks_test(base.get("sample") or [], cur.get("sample") or [])
    statistics: dict[str, Any] = {"psi": _r(value_psi), "ks_statistic": _r(ks_stat), "ks_pvalue": _r(ks_p, 4)}
    p_level = thr["ks_pvalue"] / m
    thresholds: dict[str, Any] = {"psi": thr["psi"]}
    significant = ks_p < p_level
    if with_missing:
        _, miss_p = chi2_test([n_b, b_missing], [n_c, c_missing])
        statistics["missing_pvalue"] = _r(miss_p, 4)
        statistics["missing_baseline"] = _r(b_missing / max(n_b + b_missing, 1), 4)
        statistics["missing_current"] = _r(c_missing / max(n_c + c_missing, 1), 4)
        p_level /= 2  # two tests for this feature: values (KS) and missingness
        thresholds["missing_pvalue"] = _r(p_level)
        significant = ks_p < p_level or miss_p < p_level
    thresholds["ks_pvalue"] = _r(p_level)
    return {"name": name, "type": "numeric", "statistics": statistics, "thresholds": thresholds,
            "violated": bool(significant and value_psi >= thr["psi"]),
            "n_baseline": n_b + b_missing, "n_current": n_c + c_missing,
            "mean_baseline": _r(base.get("mean")), "mean_current": _r(cur.get("mean"))}


def _with_missing(counts: Mapping[str, Any], missing: int) -> dict[str, float]:
    out = {str(k): float(v or 0) for k, v in counts.items()}
    if missing:
        out[MISSING] = out.get(MISSING, 0.0) + missing
    return out


def _categorical_drift(name: str, base: Mapping, cur: Mapping, thr: Mapping, m: int) -> dict:
    b = _with_missing(base.get("counts") or {}, int(base.get("missing") or 0))
    c = _with_missing(cur.get("counts") or {}, int(cur.get("missing") or 0))
    if MISSING in b or MISSING in c:
        b.setdefault(MISSING, 0.0)
        c.setdefault(MISSING, 0.0)
    # counts that are not independent rows (tokens) are tested at the number of rows they came from
    scale = (base.get("effective_n"), cur.get("effective_n"))
    chi2, chi2_p = chi2_test(b, c, scale_to=scale)
    js = js_distance(b, c)
    p_level = thr["chi2_pvalue"] / m
    return {"name": name, "type": "categorical",
            "statistics": {"chi2": _r(chi2), "chi2_pvalue": _r(chi2_p, 4), "js_distance": _r(js)},
            "thresholds": {"chi2_pvalue": _r(p_level), "js_distance": thr["js_distance"]},
            "violated": bool(chi2_p < p_level and js >= thr["js_distance"]),
            "n_baseline": int(round(sum(b.values()))), "n_current": int(round(sum(c.values()))),
            "baseline_counts": {k: int(v) for k, v in b.items()},
            "current_counts": {k: int(v) for k, v in c.items()}}


def _embedding_drift(base: np.ndarray, cur: np.ndarray, thr: Mapping, m: int, seed: int) -> dict:
    value, p = mmd_test(base, cur, seed=seed)
    p_level = thr["mmd_pvalue"] / m
    return {"name": "embedding", "type": "embedding",
            "statistics": {"mmd": _r(value), "mmd_pvalue": _r(p, 4)},
            "thresholds": {"mmd_pvalue": _r(p_level), "mmd": thr["mmd"]},
            "violated": bool(p < p_level and value >= thr["mmd"]),
            "n_baseline": int(len(base)), "n_current": int(len(cur))}


# --------------------------------------------------------------------------- compare


def _usable(embeddings: np.ndarray | None) -> bool:
    return embeddings is not None and np.asarray(embeddings).ndim >= 1 and len(embeddings) >= 2


def compare(baseline: dict, current: dict, *, thresholds: dict | None = None,
            baseline_embeddings: np.ndarray | None = None, current_embeddings: np.ndarray | None = None,
            seed: int = 0) -> dict:
    """Compare a current profile with its baseline (both from ``build_profile``; the current one
    built with ``reference=baseline``).

    → ``{"features": [item…], "violations": [violated items], "thresholds": effective thresholds,
    "insufficient": bool, "n_baseline", "n_current", "bonferroni_m"}``, each item ``{"name",
    "type", "statistics", "thresholds" (the corrected levels actually applied), "violated",
    "n_baseline", "n_current"}``. Features: the baseline's inputs in order, then
    "prediction.class", "prediction.confidence" and "embedding" (when both embedding samples
    are given). InvalidInput for bad threshold overrides.
    """
    thr = effective_thresholds(thresholds)
    b_feats = (baseline or {}).get("features") or {}
    c_feats = (current or {}).get("features") or {}
    plan: list[tuple[str, str, Mapping, Mapping]] = []
    for name, base in b_feats.items():
        if not isinstance(base, Mapping) or base.get("type") not in ("numeric", "categorical"):
            continue
        cur = c_feats.get(name)
        cur = cur if isinstance(cur, Mapping) and cur.get("type") == base["type"] else {}
        plan.append((str(name), base["type"], base, cur))
    b_pred = (baseline or {}).get("predictions") or {}
    c_pred = (current or {}).get("predictions") or {}
    if b_pred.get("classes"):
        plan.append(("prediction.class", "categorical", {"counts": b_pred["classes"]},
                     {"counts": c_pred.get("classes") or {}}))
    if isinstance(b_pred.get("confidence"), Mapping) and b_pred["confidence"].get("n"):
        plan.append(("prediction.confidence", "numeric", b_pred["confidence"], c_pred.get("confidence") or {}))
    with_embedding = _usable(baseline_embeddings) and _usable(current_embeddings)
    m = max(1, len(plan) + int(with_embedding))
    items = [_numeric_drift(name, base, cur, thr, m) if kind == "numeric"
             else _categorical_drift(name, base, cur, thr, m)
             for name, kind, base, cur in plan]
    if with_embedding:
        items.append(_embedding_drift(np.asarray(baseline_embeddings), np.asarray(current_embeddings),
                                      thr, m, seed))
    n_current = int((current or {}).get("rows") or 0)
    insufficient = n_current < int(thr["min_samples"])
    if insufficient:
        for item in items:
            item["violated"] = False
    result: dict[str, Any] = {
        "insufficient": insufficient,
        "n_baseline": int((baseline or {}).get("rows") or 0),
        "n_current": n_current,
        "bonferroni_m": m,
        "thresholds": thr,
        "features": items,
        "violations": [item for item in items if item["violated"]],
    }
    if insufficient:
        result["reason"] = f"{n_current} rows in the window, fewer than min_samples={thr['min_samples']}"
    return result


def check_quality(quality: Mapping[str, Any] | None, thresholds: Mapping[str, Any] | None = None,
                  *, alpha: float = 0.05) -> dict:
    """The accuracy floor as a drift-like item: violated when the accuracy is below the floor
    AND a one-sided binomial test (level ``alpha``) says the true accuracy is below it.

    → ``{"name": "quality.accuracy", "type": "quality", "statistics": {"accuracy",
    "accuracy_pvalue"}, "thresholds": {"accuracy"}, "violated", "n_baseline": None, "n_current"}``;
    never violated without a floor or without labelled rows.
    """
    thr = effective_thresholds(thresholds)
    floor = thr.get("accuracy")
    n = int((quality or {}).get("n") or 0)
    accuracy = (quality or {}).get("accuracy")
    p = 1.0
    if floor is not None and n > 0 and accuracy is not None:
        correct = int(round(float(accuracy) * n))
        p = float(sstats.binomtest(correct, n, float(floor), alternative="less").pvalue) if floor > 0 else 1.0
    violated = bool(floor is not None and accuracy is not None and n > 0
                    and float(accuracy) < float(floor) and p < alpha)
    return {"name": "quality.accuracy", "type": "quality",
            "statistics": {"accuracy": accuracy, "accuracy_pvalue": _r(p, 4)},
            "thresholds": {"accuracy": floor}, "violated": violated, "n_baseline": None, "n_current": n}
