"""Drift of a current window against the baseline: per feature a test and an effect size.

What is compared (features)
    numeric (input features, ``prediction.confidence``): the two-sample KS test of the window's
        values (all of them, up to 100,000) against the baseline's stored sample; effect = how far
        the distribution moved, in baseline standard deviations (Wasserstein-1 / std, ``shift``).
        PSI on the baseline's bins is reported too. Missing values: a chi-square test on missing
        vs present, effect = its JS distance.
    categorical (input features, text ``tokens``): chi-square on the 2×K table; effect = the
        Jensen–Shannon distance (base 2).
    ``prediction.class`` — the prior shift: the mix of predicted classes, tested like a categorical
        feature. It is always compared when the baseline has predictions, because a change in
        what the model answers is the first thing a user feels.
    ``embedding``: MMD² (RBF kernel, median bandwidth) with a permutation p-value.

The decision at a full window (≥ ``min_samples`` rows) — a feature is violated when BOTH
    1. its test rejects "no shift" with the family-wise level kept: Holm's step-down over all tests
       of the window (``ks_pvalue`` / ``chi2_pvalue`` / ``mmd_pvalue`` are family-wise levels,
       0.05 — so an unshifted window raises anything with probability ≤ 1 in 20), and
    2. its effect, with the noise two samples of one distribution show anyway taken off, reaches
       the floor that says "practically significant" (tune with ``--threshold``):
         numeric      ``shift`` 0.1 — the distribution moved by ≥ 0.1 standard deviations
                      (a mean shift of 0.1 std is 0.1; a spread ×1.5 ≈ 0.4),
         categorical  ``js_distance`` 0.1 — e.g. one class of ten going from 10 % to ≈ 16 % of rows
                      (Evidently's default JS floor too),
         embedding    ``mmd`` 0.02 (MMD² is estimated without bias; ≈ 10× its noise at 200 rows),
         ``psi``      off by default; set it to also demand a noise-corrected PSI.
   Why noise-corrected: an effect measured on a small window is inflated by noise (raw PSI of
   two same-distribution samples ≈ (bins - 1)(1/n_b + 1/n_c): 0.05 at 200 rows, 0.19 at 50), so a
   raw floor was crossed on noise at 200 rows and not at 1,000 — detection FELL as evidence grew.
   With the noise removed, the effect estimate is about the same at every window size, and the
   test's power only grows with n: more data never means fewer detections.

Early verdicts (fewer rows than ``min_samples``)
    A window still filling up is judged early only where the evidence is already decisive: per
    feature an anytime-valid e-value on its bins / categories (stats.log_evidence — a Bayes
    factor whose false-alarm guarantee holds however often a growing window is looked at), with
    Bonferroni over the features: decisive when e ≥ m / ``early_level`` (0.01), and the effect
    floor reached. Such features are violations marked ``"early": true``; with none, the window is
    ``insufficient`` and keeps accumulating. Across all early looks at a window the false-alarm
    rate stays ≤ ``early_level``. (The embedding test is not sequential: it waits for min_samples.)

``accuracy`` is an optional quality floor (None = off), checked by ``check_quality`` with a
one-sided binomial test so a handful of labels cannot raise an alarm on their own.
The statistical properties (false alarms under no shift over many seeds, power that grows with n)
are pinned in tests/test_monitoring_drift.py; bench/monitoring.py --power measures them per shift and
window size side by side with Evidently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats as sstats

from loopml.core.errors import InvalidInput
from loopml.monitoring.stats import (aligned_counts, chi2_test, js_corrected, js_distance, ks_test, log_evidence, mmd_test, psi,
                                     psi_noise, wasserstein_shift)

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "shift": 0.1,          # effect floor, numeric: moved ≥ 0.1 baseline std (noise removed)
    "js_distance": 0.1,    # effect floor, categorical (noise removed)
    "mmd": 0.02,           # effect floor (MMD²), embedding
    "psi": None,           # optional extra floor on the noise-corrected PSI of numeric features
    "ks_pvalue": 0.05,     # family-wise level (Holm over the window's tests), numeric
    "chi2_pvalue": 0.05,   # idem, categorical
    "mmd_pvalue": 0.05,    # idem, embedding
    "early_level": 0.01,   # false-alarm budget of all early looks at a window below min_samples
    "accuracy": None,      # quality floor (None = no floor)
    "min_samples": 200,    # rows a window needs for the full tests (fewer: early verdicts only)
}
_P_KEYS = ("ks_pvalue", "chi2_pvalue", "mmd_pvalue", "early_level")
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
            if isinstance(value, bool) or not (math.isfinite(number) and number.is_integer() and number >= 1):
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
        if key in ("psi", "mmd", "shift") and number < 0:
            raise InvalidInput(f"threshold {key} must be ≥ 0, got {value!r}")
        out[key] = number
    return out


def parse_thresholds(items: Iterable[str]) -> dict[str, Any]:
    """``["shift=0.2", "min_samples=500"]`` (the CLI's ``--threshold metric=value``) → validated dict."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"threshold {item!r} must look like metric=value (e.g. shift=0.2)")
        raw[key.strip()] = value.strip()
    return validate_thresholds(raw)


def effective_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_THRESHOLDS, **validate_thresholds(thresholds)}


# --------------------------------------------------------------------------- per feature
# Each feature yields an item (what reports show) and its "parts": the hypotheses it contributes
# to the window's family — {"key": threshold key reported, "alpha": family-wise level, "p",
# "effect_ok"} — plus "log_e" (the early e-value) when the feature can be judged early.


def _r(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return float(f"{float(x):.{digits}g}")


def _numeric_drift(name: str, base: Mapping, cur: Mapping, thr: Mapping) -> tuple[dict, list[dict], float]:
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
    b_sample, c_sample = base.get("sample") or [], cur.get("sample") or []
    ks = cur.get("ks") if isinstance(cur.get("ks"), Mapping) else None
    if ks is not None and ks.get("pvalue") is not None:
        ks_stat, ks_p = float(ks.get("statistic") or 0.0), float(ks["pvalue"])
    else:  # a profile built without the baseline at hand: the stored samples
        ks_stat, ks_p = ks_test(b_sample, c_sample)
    shift = wasserstein_shift(b_sample, c_sample, base.get("std"))
    value_psi = psi(b_counts, c_counts)
    bins = sum(1 for b, c in zip(b_counts, c_counts) if b or c)
    psi_corrected = max(0.0, value_psi - psi_noise(bins, n_b + b_missing, n_c + c_missing))
    effect_ok = shift["corrected"] >= thr["shift"] and (thr["psi"] is None or psi_corrected >= thr["psi"])
    statistics: dict[str, Any] = {
        "shift": _r(shift["corrected"]), "shift_raw": _r(shift["raw"]), "shift_noise": _r(shift["noise"]),
        "ks_statistic": _r(ks_stat), "ks_pvalue": _r(ks_p, 4), "psi": _r(value_psi), "psi_corrected": _r(psi_corrected)}
    thresholds: dict[str, Any] = {"shift": thr["shift"]}
    if thr["psi"] is not None:
        thresholds["psi"] = thr["psi"]
    parts = [{"key": "ks_pvalue", "alpha": thr["ks_pvalue"], "p": ks_p, "effect_ok": effect_ok}]
    if with_missing:
        present_missing_b, present_missing_c = [n_b, b_missing], [n_c, c_missing]
        _, miss_p = chi2_test(present_missing_b, present_missing_c)
        miss_js = js_corrected(js_distance(present_missing_b, present_missing_c), 2, n_b + b_missing, n_c + c_missing)
        statistics.update(missing_pvalue=_r(miss_p, 4), missing_js_distance=_r(miss_js),
                          missing_baseline=_r(b_missing / max(n_b + b_missing, 1), 4),
                          missing_current=_r(c_missing / max(n_c + c_missing, 1), 4))
        thresholds["missing_js_distance"] = thr["js_distance"]
        parts.append({"key": "missing_pvalue", "alpha": thr["ks_pvalue"], "p": miss_p,
                      "effect_ok": miss_js >= thr["js_distance"]})
    item = {"name": name, "type": "numeric", "statistics": statistics, "thresholds": thresholds,
            "violated": False, "n_baseline": n_b + b_missing, "n_current": n_c + c_missing,
            "mean_baseline": _r(base.get("mean")), "mean_current": _r(cur.get("mean"))}
    return item, parts, log_evidence(b_counts, c_counts)


def _with_missing(counts: Mapping[str, Any], missing: int) -> dict[str, float]:
    out = {str(k): float(v or 0) for k, v in counts.items()}
    if missing:
        out[MISSING] = out.get(MISSING, 0.0) + missing
    return out


def _categorical_drift(name: str, base: Mapping, cur: Mapping, thr: Mapping) -> tuple[dict, list[dict], float]:
    b = _with_missing(base.get("counts") or {}, int(base.get("missing") or 0))
    c = _with_missing(cur.get("counts") or {}, int(cur.get("missing") or 0))
    if MISSING in b or MISSING in c:
        b.setdefault(MISSING, 0.0)
        c.setdefault(MISSING, 0.0)
    # counts that are not independent rows (tokens) are tested at the number of rows they came from
    scale = (base.get("effective_n"), cur.get("effective_n"))
    chi2, chi2_p = chi2_test(b, c, scale_to=scale)
    _, b_arr, c_arr = aligned_counts(b, c)
    n_b = float(scale[0]) if scale[0] else float(b_arr.sum())
    n_c = float(scale[1]) if scale[1] else float(c_arr.sum())
    categories = int(np.count_nonzero((b_arr + c_arr) > 0))
    raw = js_distance(b, c)
    js = js_corrected(raw, categories, n_b, n_c)
    if b_arr.sum() > 0 and c_arr.sum() > 0:  # the e-value, like the test, counts independent units
        b_arr, c_arr = b_arr * (n_b / b_arr.sum()), c_arr * (n_c / c_arr.sum())
    item = {"name": name, "type": "categorical",
            "statistics": {"chi2": _r(chi2), "chi2_pvalue": _r(chi2_p, 4), "js_distance": _r(js),
                           "js_distance_raw": _r(raw)},
            "thresholds": {"js_distance": thr["js_distance"]},
            "violated": False, "n_baseline": int(round(sum(b.values()))), "n_current": int(round(sum(c.values()))),
            "baseline_counts": {k: int(v) for k, v in b.items()},
            "current_counts": {k: int(v) for k, v in c.items()}}
    parts = [{"key": "chi2_pvalue", "alpha": thr["chi2_pvalue"], "p": chi2_p, "effect_ok": js >= thr["js_distance"]}]
    return item, parts, log_evidence(b_arr, c_arr)


def _embedding_drift(base: np.ndarray, cur: np.ndarray, thr: Mapping, seed: int) -> tuple[dict, list[dict], None]:
    value, p = mmd_test(base, cur, seed=seed)
    item = {"name": "embedding", "type": "embedding",
            "statistics": {"mmd": _r(value), "mmd_pvalue": _r(p, 4)},
            "thresholds": {"mmd": thr["mmd"]},
            "violated": False, "n_baseline": int(len(base)), "n_current": int(len(cur))}
    return item, [{"key": "mmd_pvalue", "alpha": thr["mmd_pvalue"], "p": p, "effect_ok": value >= thr["mmd"]}], None


# --------------------------------------------------------------------------- decisions


def _holm(items: list[dict], parts: list[list[dict]]) -> int:
    """Holm's step-down over every part of every item (levels may differ per test kind: parts are
    ranked by p / alpha). Marks violated items; records each part's applied level. → tests (M)."""
    flat = [(i, part) for i, item_parts in enumerate(parts) for part in item_parts]
    m = len(flat)
    flat.sort(key=lambda ip: ip[1]["p"] / ip[1]["alpha"])
    rejecting = True
    for rank, (i, part) in enumerate(flat):
        level = part["alpha"] / (m - rank)
        rejecting = rejecting and part["p"] <= level
        items[i]["thresholds"][part["key"]] = _r(level)
        if rejecting and part["effect_ok"]:
            items[i]["violated"] = True
    return m


def _early(items: list[dict], parts: list[list[dict]], evidence: list[float | None], thr: Mapping) -> int:
    """Early look: decisive features (e-value ≥ m / early_level, effect floor reached). → m."""
    judged = [i for i, e in enumerate(evidence) if e is not None]
    m = max(1, len(judged))
    bar = math.log(m / thr["early_level"])
    for i in judged:
        items[i]["statistics"]["log10_evidence"] = _r(evidence[i] / math.log(10), 4)
        items[i]["thresholds"]["log10_evidence"] = _r(bar / math.log(10), 4)
        if evidence[i] >= bar and any(part["effect_ok"] for part in parts[i]):
            items[i]["violated"] = items[i]["early"] = True
    return m


# --------------------------------------------------------------------------- compare


def _usable(embeddings: np.ndarray | None) -> bool:
    return embeddings is not None and np.asarray(embeddings).ndim >= 1 and len(embeddings) >= 2


def compare(baseline: dict, current: dict, *, thresholds: dict | None = None,
            baseline_embeddings: np.ndarray | None = None, current_embeddings: np.ndarray | None = None,
            seed: int = 0) -> dict:
    """Compare a current profile with its baseline (both from ``build_profile``; the current one
    built with ``reference=baseline``).

    → ``{"features": [item…], "violations": [violated items], "thresholds": effective thresholds,
    "early": bool (fewer rows than min_samples), "insufficient": bool (early and nothing
    decisive), "n_baseline", "n_current", "tests": M, "correction": "holm" | "early"}``, each item
    ``{"name", "type", "statistics", "thresholds" (the corrected levels actually applied),
    "violated", ["early": True], "n_baseline", "n_current"}``. Features: the baseline's inputs in
    order, then "prediction.class", "prediction.confidence" and "embedding" (when both embedding
    samples are given; not at an early look). InvalidInput for bad threshold overrides.
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
    n_current = int((current or {}).get("rows") or 0)
    early = n_current < int(thr["min_samples"])
    computed = [_numeric_drift(name, base, cur, thr) if kind == "numeric"
                else _categorical_drift(name, base, cur, thr)
                for name, kind, base, cur in plan]
    if not early and _usable(baseline_embeddings) and _usable(current_embeddings):
        computed.append(_embedding_drift(np.asarray(baseline_embeddings), np.asarray(current_embeddings), thr, seed))
    items = [item for item, _, _ in computed]
    parts = [p for _, p, _ in computed]
    tests = _early(items, parts, [e for _, _, e in computed], thr) if early and n_current > 0 else \
        (_holm(items, parts) if not early else 0)
    violations = [item for item in items if item["violated"]]
    result: dict[str, Any] = {
        "early": early,
        "insufficient": early and not violations,
        "n_baseline": int((baseline or {}).get("rows") or 0),
        "n_current": n_current,
        "tests": tests,
        "correction": "early" if early else "holm",
        "thresholds": thr,
        "features": items,
        "violations": violations,
    }
    if early:
        result["reason"] = (f"{n_current} rows in the window, fewer than min_samples={thr['min_samples']}: "
                            + (f"{len(violations)} feature(s) already decisive" if violations
                               else "nothing decisive yet"))
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
