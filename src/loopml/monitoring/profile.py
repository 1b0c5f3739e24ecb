"""Profiles: the JSON-serialisable summary of a batch of model inputs and outputs.

A baseline profile is built from a model version's training data at registration; a current
profile from one monitoring window, with ``reference=<baseline profile>`` so both share the same
histogram edges, categories, top-K tokens and pixel range — ``drift.compare`` then compares
like with like. Shape::

    {"kind": "image"|"text"|"tabular", "rows": N, "version": 1,
     "features": {name: {"type": "numeric", "n", "missing", "mean", "std", "min", "max",
                         "quantiles": {"p1", …, "p99"}, "edges", "counts", "sample",
                         "ks": {"statistic", "pvalue", "n"}}   # current windows only: vs the baseline
                       | {"type": "categorical", "n", "missing", "counts": {category: n}}},
     "predictions": {"classes": {class: n}, "confidence": <numeric summary>},
     "embedding": {"dim", "n"},             # only when embeddings were given (stored apart as .npy)
     "pixel_range": [lo, hi]}               # image profiles only

Features per kind are listed in features.py. Text adds the categorical ``tokens`` profile (the
TOP_TOKENS most frequent baseline tokens + "<other>", counted over tokens, with ``effective_n`` =
the number of texts, since tokens of one text are not independent draws).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.core.errors import InvalidInput
from loopml.monitoring import features as F
from loopml.monitoring.stats import category_counts, numeric_summary
from loopml.serving.codecs import ANSWER_DECIMALS
from loopml.models.signature import KINDS

PROFILE_VERSION = 1
TOP_TOKENS = 100
MAX_CATEGORIES = 50
# Values kept per numeric feature. The baseline's sample is every test's reference, reused by every
# window of the version: a 2,000-of-5,000 subsample's own luck (its mean off by 2-3 standard errors
# now and then) made large windows of unchanged traffic look shifted; 5,000 (all the rows a
# baseline profiles) keeps that luck small. A window's sample only serves effect sizes and plots;
# its KS test runs on up to 100,000 of its values.
BASELINE_SAMPLE = 5_000
WINDOW_SAMPLE = 2_000
OTHER = "<other>"


def _numeric(values: Any, ref: dict | None, name: str, *, max_sample: int, seed: int) -> dict:
    edges = reference_sample = None
    if ref is not None:
        ref_feature = (ref.get("features") or {}).get(name) if name != "prediction.confidence" \
            else (ref.get("predictions") or {}).get("confidence")
        if isinstance(ref_feature, dict) and ref_feature.get("type") == "numeric":
            edges = ref_feature.get("edges") or []
            reference_sample = ref_feature.get("sample") or []
    return numeric_summary(values, edges=edges, max_sample=max_sample, seed=seed, reference_sample=reference_sample)


def _categorical(keys: list[str | None], ref_counts: dict | None, *, max_categories: int) -> dict:
    if ref_counts is None:
        counts, missing = category_counts(keys, max_categories=max_categories, other=OTHER)
    else:
        # a baseline that pooled its rare categories into <other> pools the window's unseen ones too
        unseen = 0 if OTHER in ref_counts else max_categories
        known = [k for k in ref_counts if k != OTHER] + ([OTHER] if OTHER in ref_counts else [])
        counts, missing = category_counts(keys, categories=known, max_categories=unseen, other=OTHER)
    return {"type": "categorical", "n": int(sum(counts.values())), "missing": int(missing), "counts": counts}


def _ref_counts(ref: dict | None, name: str) -> dict | None:
    if ref is None:
        return None
    feature = (ref.get("features") or {}).get(name)
    if isinstance(feature, dict) and feature.get("type") == "categorical":
        return dict(feature.get("counts") or {})
    return None


def _predictions(proba: Any, class_names: list[str], predicted: Any, confidence: Any,
                 ref: dict | None, *, max_sample: int, seed: int) -> dict:
    names = [str(c) for c in class_names]
    if proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        if p.ndim != 2:
            raise InvalidInput(f"proba must be an (N, classes) array, got shape {p.shape}")
        ok = np.isfinite(p).all(axis=1) if p.shape[1] else np.zeros(p.shape[0], dtype=bool)
        idx = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=1) if p.shape[1] else np.zeros(0, int)
        labels: list[str | None] = [
            (names[i] if i < len(names) else str(i)) if good else None for i, good in zip(idx, ok)]
        conf = np.where(ok, np.max(np.where(np.isfinite(p), p, -np.inf), axis=1), np.nan) \
            if p.shape[1] else np.full(p.shape[0], np.nan)
        # at the precision endpoints answer with: a confident model's baseline holds values like
        # 0.99999988 that served answers round to 1.0, and bins edged between them flag clean traffic
        conf = np.round(conf, ANSWER_DECIMALS)
    else:
        labels = [None if v is None else str(v) for v in (predicted if predicted is not None else [])]
        conf = np.asarray(confidence if confidence is not None else [np.nan] * len(labels), dtype=np.float64)
    ref_classes = ((ref or {}).get("predictions") or {}).get("classes")
    base = list(ref_classes) if isinstance(ref_classes, dict) else names
    counts = {c: 0 for c in base}
    for label in labels:
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    return {"classes": counts,
            "confidence": _numeric(conf, ref, "prediction.confidence", max_sample=max_sample, seed=seed + 1)}


def token_dispersion(tokens: list[list[str] | None], categories: list[str], *, groups: int = 20,
                     seed: int = 0) -> float:
    """How much more the token profile varies between groups of texts than independent draws would.

    Tokens of one text are correlated (a sports story repeats sports words), so a chi-square test on
    raw token counts is far too confident. The texts are dealt into ``groups`` random groups and the
    Pearson dispersion φ = χ²(groups × categories) / dof of their token counts is the design effect:
    ``effective_n = tokens / φ`` is the number of independent draws the counts are worth. ≥ 1;
    1.0 when there are too few texts to estimate it (< 2 per group).
    """
    texts = [t for t in tokens if t]
    if len(texts) < 2 * groups or len(categories) < 2:
        return 1.0
    index = {c: i for i, c in enumerate(categories)}
    other = index.get(OTHER)
    table = np.zeros((groups, len(categories)))
    order = np.random.default_rng(seed).permutation(len(texts))
    for rank, i in enumerate(order):
        row = table[rank % groups]
        for token in texts[i]:
            j = index.get(token, other)
            if j is not None:
                row[j] += 1
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) <= 0).any():
        return 1.0
    from scipy.stats import chi2_contingency

    chi2, _, dof, _ = chi2_contingency(table, correction=False)
    return round(max(1.0, float(chi2) / max(dof, 1)), 4)


def build_profile(*, kind: str, raw: Any, proba: np.ndarray | None, class_names: list[str], schema: dict,
                  vocab: dict[str, int] | None = None, embeddings: np.ndarray | None = None,
                  max_sample: int | None = None, seed: int = 0, reference: dict | None = None,
                  predicted: list[str] | None = None, confidence: np.ndarray | None = None) -> dict:
    """Profile ``raw`` inputs and their predictions (see the module docstring for the shape).

    kind "image": raw (N, H, W[, C]) array; "text": list of strings (or records / a DataFrame
    with the schema's text column); "tabular": a DataFrame (or records) with the schema's
    columns. ``proba`` (N, K) gives the predicted classes and confidences; when it is None,
    ``predicted`` labels and ``confidence`` values are used instead. ``reference``: the baseline
    profile whose binning, categories, tokens and pixel range a current window must reuse.
    """
    if kind not in KINDS:
        raise InvalidInput(f"cannot profile inputs of kind {kind!r}; expected one of {', '.join(KINDS)}")
    schema = schema or {}
    ref = reference
    if max_sample is None:
        max_sample = WINDOW_SAMPLE if ref is not None else BASELINE_SAMPLE
    profile: dict[str, Any] = {"kind": kind, "version": PROFILE_VERSION}
    feats: dict[str, dict] = {}
    if kind == "image":
        arr = np.asarray(raw) if not (isinstance(raw, (list, tuple)) and len(raw) == 0) else None
        images = None if arr is None or (arr.size == 0 and arr.ndim < 3) else F.as_images(arr)
        if ref is not None and ref.get("pixel_range"):
            prange = (float(ref["pixel_range"][0]), float(ref["pixel_range"][1]))
        else:
            prange = F.pixel_range(schema, images)
        profile["pixel_range"] = [prange[0], prange[1]]
        rows = 0 if images is None else int(images.shape[0])
        values = F.image_features(images, prange) if images is not None else {n: np.zeros(0) for n in F.IMAGE_FEATURES}
        for i, (name, v) in enumerate(values.items()):
            feats[name] = _numeric(v, ref, name, max_sample=max_sample, seed=seed + 10 + i)
    elif kind == "text":
        texts = F.texts_from_raw(raw, schema)
        rows = len(texts)
        tokens = [F.tokenize(t) if t is not None else None for t in texts]
        for i, (name, v) in enumerate(F.text_features(tokens, vocab).items()):
            feats[name] = _numeric(v, ref, name, max_sample=max_sample, seed=seed + 10 + i)
        ref_tokens = _ref_counts(ref, "tokens")
        token_keys = [t for toks in tokens if toks for t in toks]
        token_feature = _categorical(token_keys, ref_tokens, max_categories=TOP_TOKENS)
        if ref_tokens is None:
            token_feature["counts"].setdefault(OTHER, 0)
        if ref_tokens is None:
            token_feature["dispersion"] = token_dispersion(tokens, list(token_feature["counts"]), seed=seed)
        dispersion = float(((ref or {}).get("features") or {}).get("tokens", token_feature).get("dispersion") or 1.0)
        token_feature["effective_n"] = round(token_feature["n"] / max(dispersion, 1.0), 3)
        feats["tokens"] = token_feature
    else:
        frame = F.as_frame(raw)
        rows = int(len(frame))
        for i, (name, ctype) in enumerate(F.tabular_columns(schema, frame)):
            ref_feature = ((ref or {}).get("features") or {}).get(name)
            if isinstance(ref_feature, dict) and ref_feature.get("type") in ("numeric", "categorical"):
                ctype = ref_feature["type"]  # the baseline decides how a column is compared
            values = F.column_values(frame, name, ctype)
            if ctype == "numeric":
                feats[name] = _numeric(values, ref, name, max_sample=max_sample, seed=seed + 10 + i)
            else:
                feats[name] = _categorical(list(values), _ref_counts(ref, name), max_categories=MAX_CATEGORIES)
    profile["rows"] = rows
    profile["features"] = feats
    profile["predictions"] = _predictions(proba, class_names, predicted, confidence, ref,
                                          max_sample=max_sample, seed=seed)
    if embeddings is not None:
        emb = np.asarray(embeddings)
        profile["embedding"] = {"dim": int(np.prod(emb.shape[1:])) if emb.ndim > 1 else 1,
                                "n": int(emb.shape[0]) if emb.ndim else 0}
    return profile
