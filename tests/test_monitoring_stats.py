"""monitoring/stats.py, features.py, profile.py, quality.py and report.py: statistics checked
against scipy and by hand on known distributions, hypothesis properties for the edge cases
(empty bins, a single value, NaN), profiles and the HTML report."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sstats
from scipy.spatial.distance import jensenshannon

from loopml.core.errors import InvalidInput
from loopml.monitoring import features as F
from loopml.monitoring import stats as S
from loopml.monitoring.profile import build_profile
from loopml.monitoring.quality import quality, quality_over_windows, shadow_comparison
from loopml.monitoring.report import render_html

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
floats_or_nan = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.floats(min_value=-1e6, max_value=1e6))
counts_lists = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20)


# --------------------------------------------------------------------------- histograms and PSI


def test_edges_are_baseline_quantiles_deduplicated():
    x = np.arange(1, 101, dtype=float)
    assert S.histogram_edges(x, 4) == [25.0, 50.0, 75.0]  # values the data holds, not interpolations
    three = np.array([0.0] * 30 + [1.0] * 40 + [2.0] * 30)  # a 3-valued feature: one bin per value
    edges = S.histogram_edges(three, 10)
    assert set(edges) <= {0.0, 1.0, 2.0}
    assert S.histogram_counts(three, edges)[:3] == [30, 40, 30]
    heavy = np.array([0.0] * 80 + list(range(1, 21)), dtype=float)  # 80 % zeros: one bin for them
    edges = S.histogram_edges(heavy, 10)
    assert edges == sorted(set(edges)) and edges[0] == 0.0
    assert S.histogram_counts(heavy, edges)[0] == 80


def test_counts_are_right_closed_with_open_outer_bins():
    edges = [0.0, 1.0]
    assert S.histogram_counts([-5, 0, 0.5, 1, 1.0001, 99, math.nan, math.inf], edges) == [2, 2, 2]


def test_single_value_feature_gets_three_bins():
    edges = S.histogram_edges([3.0] * 50)
    assert len(edges) == 2 and edges[1] == 3.0 and edges[0] < 3.0
    assert S.histogram_counts([2.0, 3.0, 3.0, 4.0], edges) == [1, 2, 1]
    base = S.histogram_counts([3.0] * 50, edges)
    assert S.psi(base, S.histogram_counts([3.0] * 50, edges)) == 0.0
    assert S.psi(base, S.histogram_counts([4.0] * 50, edges)) > 1.0


def test_psi_matches_hand_computation():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert S.psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # an empty baseline bin uses the documented epsilon
    eps = S.PSI_EPSILON
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    assert S.psi([100, 0], [50, 50]) == pytest.approx(expected)
    assert S.psi([], []) == 0.0 and S.psi([0, 0], [5, 5]) == 0.0 and S.psi([5, 5], [0, 0]) == 0.0


def test_psi_on_known_normal_shift_grows_with_the_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 20_000)
    edges = S.histogram_edges(base)
    b = S.histogram_counts(base, edges)
    values = [S.psi(b, S.histogram_counts(rng.normal(mu, 1, 20_000), edges)) for mu in (0.0, 0.25, 0.5, 1.0)]
    assert values[0] < 0.01 < values[1] < values[2] < values[3]
    # PSI of a 1-sd mean shift of a normal (10 decile bins) is about 1.0 (textbook value ~0.9-1.1)
    assert 0.7 < values[3] < 1.4


@FAST
@given(counts_lists, counts_lists)
def test_psi_is_non_negative(a, b):
    assert S.psi(a, b) >= 0.0


@FAST
@given(counts_lists)
def test_psi_of_identical_counts_is_zero(a):
    assert S.psi(a, a) == 0.0


@FAST
@given(st.lists(floats_or_nan, max_size=200), st.integers(min_value=1, max_value=20))
def test_histograms_never_crash_and_count_every_finite_value(values, n_bins):
    edges = S.histogram_edges(values, n_bins)
    assert all(a < b for a, b in zip(edges, edges[1:]))
    counts = S.histogram_counts(values, edges)
    finite = [v for v in values if math.isfinite(v)]
    assert len(counts) == len(edges) + 1 and sum(counts) == len(finite)
    summary = S.numeric_summary(values, max_sample=50)
    assert summary["n"] == len(finite) and summary["missing"] == len(values) - len(finite)
    assert len(summary["sample"]) == min(50, len(finite))
    json.dumps(summary, allow_nan=False)
    assert S.psi(summary["counts"], S.histogram_counts(values[::-1], summary["edges"])) == pytest.approx(0.0)


@FAST
@given(st.lists(floats_or_nan, max_size=100), st.lists(floats_or_nan, max_size=100))
def test_statistics_accept_nan_and_empty_inputs(a, b):
    stat, p = S.ks_test(a, b)
    assert 0.0 <= stat <= 1.0 and 0.0 <= p <= 1.0
    base = S.numeric_summary(a)
    cur = S.numeric_summary(b, edges=base["edges"])
    assert len(cur["counts"]) == len(base["counts"])
    assert S.psi(base["counts"], cur["counts"]) >= 0.0


# --------------------------------------------------------------------------- KS, chi-square, JS, MMD


def test_ks_matches_scipy_and_drops_nan():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 1, 400)
    ref = sstats.ks_2samp(a, b)
    assert S.ks_test(a, b) == pytest.approx((ref.statistic, ref.pvalue))
    assert S.ks_test(np.append(a, [np.nan, np.inf]), b) == pytest.approx((ref.statistic, ref.pvalue))
    assert S.ks_test([], b) == (0.0, 1.0)
    same = S.ks_test(rng.uniform(size=1000), rng.uniform(size=1000))
    assert same[1] > 0.01


def test_chi2_matches_scipy_and_keeps_unseen_categories():
    base, cur = {"a": 30, "b": 50, "c": 20}, {"a": 40, "b": 35, "c": 10, "new": 15}
    table = np.array([[30, 50, 20, 0], [40, 35, 10, 15]])
    chi2, p, _, _ = sstats.chi2_contingency(table, correction=False)
    assert S.chi2_test(base, cur) == pytest.approx((chi2, p))
    assert S.aligned_counts(base, cur)[0] == ["a", "b", "c", "new"]
    # degenerate tables: no evidence
    assert S.chi2_test({"a": 10}, {"a": 3}) == (0.0, 1.0)
    assert S.chi2_test({"a": 10, "b": 5}, {}) == (0.0, 1.0)
    assert S.chi2_test({}, {}) == (0.0, 1.0)
    # scaling a row to fewer independent units weakens the test, keeps the statistic's shape
    assert S.chi2_test(base, cur, scale_to=(10, 10))[1] > p


def test_js_distance_matches_scipy():
    base, cur = {"x": 10, "y": 30}, {"x": 25, "y": 15, "z": 10}
    assert S.js_distance(base, cur) == pytest.approx(jensenshannon([10, 30, 0], [25, 15, 10], base=2))
    assert S.js_distance(base, base) == pytest.approx(0.0, abs=1e-7)
    assert S.js_distance({"a": 5}, {"b": 5}) == pytest.approx(1.0)
    assert S.js_distance({}, {"a": 1}) == 0.0


def test_category_counts_pool_rare_categories():
    values = ["a"] * 5 + ["b"] * 3 + ["c", "d", None]
    counts, missing = S.category_counts(values, max_categories=2)
    assert counts == {"a": 5, "b": 3, "<other>": 2} and missing == 1
    counts, _ = S.category_counts(["a", "z", "z"], categories=["a", "b"])
    assert counts == {"a": 1, "b": 0, "z": 2}


def test_mmd_same_distribution_vs_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (300, 8))
    same = S.mmd_test(x, rng.normal(0, 1, (300, 8)), seed=0)
    shifted = S.mmd_test(x, rng.normal(0.7, 1, (300, 8)), seed=0)
    assert same[1] > 0.05 and abs(same[0]) < 0.01
    assert shifted[1] < 1e-3 and shifted[0] > 0.05
    assert S.mmd_test(x, rng.normal(0.7, 1, (300, 8)), seed=5)[1] < 1e-3
    # deterministic for a seed
    y = rng.normal(0, 1, (300, 8))
    assert S.mmd_test(x, y, seed=7) == S.mmd_test(x, y, seed=7)


def test_mmd_degenerate_inputs():
    x = np.ones((10, 3))
    assert S.mmd_test(x, x) == (0.0, 1.0)  # all identical: zero bandwidth
    assert S.mmd_test(x[:1], x) == (0.0, 1.0)
    assert S.mmd_test(np.zeros((5, 2)), np.zeros((5, 3))) == (0.0, 1.0)
    with_nan = np.vstack([np.random.default_rng(0).normal(size=(20, 2)), [[np.nan, 1.0]]])
    value, p = S.mmd_test(with_nan, np.random.default_rng(1).normal(size=(20, 2)))
    assert math.isfinite(value) and 0 <= p <= 1


# --------------------------------------------------------------------------- features


def test_image_features_on_known_images():
    blank = np.zeros((1, 4, 4, 1), dtype=np.uint8)
    full = np.full((1, 4, 4, 1), 255, dtype=np.uint8)
    corner = np.zeros((1, 4, 4, 1), dtype=np.uint8)
    corner[0, :2, :2, 0] = 255  # the top-left quarter
    f = F.image_features(np.concatenate([blank, full, corner]), (0.0, 255.0))
    assert f["mean_intensity"] == pytest.approx([0.0, 1.0, 0.25])
    assert f["ink_fraction"] == pytest.approx([0.0, 1.0, 0.25])
    assert f["contrast"] == pytest.approx([0.0, 0.0, np.std([1] * 4 + [0] * 12)])
    assert f["bbox_fraction"] == pytest.approx([0.0, 1.0, 0.25])
    assert f["centroid_row"] == pytest.approx([0.5, 0.5, 1 / 6])
    assert f["centroid_col"] == pytest.approx([0.5, 0.5, 1 / 6])
    # any dtype, relative to the pixel range: floats in 0..1 and the same image as uint8 agree
    g = F.image_features(corner.astype(np.float32) / 255.0, (0.0, 1.0))
    assert g["mean_intensity"] == pytest.approx([0.25])


def test_pixel_range_from_schema_dtype_or_data():
    schema = {"kind": "image", "features": [{"name": "image", "shape": [8, 8, 1], "min": 0, "max": 16}]}
    assert F.pixel_range(schema) == (0.0, 16.0)
    assert F.pixel_range({}, np.zeros((1, 2, 2, 1), dtype=np.uint8)) == (0.0, 255.0)
    assert F.pixel_range({}, np.full((1, 2, 2, 1), 0.7, dtype=np.float32)) == (0.0, 1.0)
    assert F.pixel_range({}, None) == (0.0, 1.0)


def test_tokenize_matches_the_seed_tokenizer():
    from loopml.models.features import _new_tokenizer
    from tokenizers.trainers import WordLevelTrainer

    texts = ["Hello, World!  It's a café...", "Déjà-vu: 3 x 4 = 12; e-mail me@example.com", "  "]
    tokenizer = _new_tokenizer()
    tokenizer.train_from_iterator(texts, trainer=WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"],
                                                                  show_progress=False))
    for text in texts:
        assert F.tokenize(text) == tokenizer.encode(text).tokens


def test_text_features_length_and_oov():
    tokens = [F.tokenize(t) for t in ["the cat sat", "the zebra", ""]]
    f = F.text_features(tokens, {"[PAD]": 0, "[UNK]": 1, "the": 2, "cat": 3, "sat": 4})
    assert list(f["length"]) == [3, 2, 0]
    assert f["oov_rate"][:2] == pytest.approx([0.0, 0.5]) and math.isnan(f["oov_rate"][2])
    assert "oov_rate" not in F.text_features(tokens, None)


def test_tabular_columns_follow_the_schema():
    schema = {"label": "species", "features": [{"name": "island", "type": "categorical"},
                                               {"name": "mass", "type": "numeric"},
                                               {"name": "species", "type": "categorical"}]}
    assert F.tabular_columns(schema) == [("island", "categorical"), ("mass", "numeric")]
    frame = pd.DataFrame({"island": ["A", None, 3.0], "mass": ["1.5", "x", None]})
    assert F.column_values(frame, "island", "categorical") == ["A", None, "3"]
    mass = F.column_values(frame, "mass", "numeric")
    assert mass[0] == 1.5 and np.isnan(mass[1:]).all()
    assert F.column_values(frame, "absent", "categorical") == [None, None, None]
    assert F.tabular_columns({}, pd.DataFrame({"a": [1.0], "b": ["x"]})) == [("a", "numeric"), ("b", "categorical")]


# --------------------------------------------------------------------------- profiles


def _json_roundtrip(profile: dict) -> dict:
    return json.loads(json.dumps(profile, allow_nan=False))


def test_image_profile_shape_and_reference_binning():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, size=(300, 8, 8, 1)).astype(np.float64)
    proba = rng.dirichlet(np.ones(3), size=300)
    schema = {"kind": "image", "features": [{"name": "image", "shape": [8, 8, 1], "min": 0, "max": 16}]}
    base = _json_roundtrip(build_profile(kind="image", raw=images, proba=proba, class_names=["a", "b", "c"],
                                         schema=schema, embeddings=rng.normal(size=(300, 5)), max_sample=100))
    assert base["kind"] == "image" and base["rows"] == 300 and base["pixel_range"] == [0.0, 16.0]
    assert set(F.IMAGE_FEATURES) <= set(base["features"])
    assert len(base["features"]["mean_intensity"]["sample"]) == 100
    assert sum(base["predictions"]["classes"].values()) == 300
    assert base["embedding"] == {"dim": 5, "n": 300}
    cur = build_profile(kind="image", raw=images[:50] * 0.5, proba=proba[:50], class_names=["a", "b", "c"],
                        schema={}, reference=base)
    assert cur["pixel_range"] == base["pixel_range"]
    for name, feature in cur["features"].items():
        assert feature["edges"] == base["features"][name]["edges"]
    assert cur["predictions"]["confidence"]["edges"] == base["predictions"]["confidence"]["edges"]
    empty = build_profile(kind="image", raw=[], proba=np.zeros((0, 3)), class_names=["a", "b", "c"],
                          schema=schema, reference=base)
    assert empty["rows"] == 0 and empty["features"]["contrast"]["n"] == 0


def test_text_profile_tokens_use_the_baseline_top_tokens():
    texts = ["the cat sat on the mat", "the dog ate the bone", "a cat and a dog"] * 20
    vocab = {"[PAD]": 0, "[UNK]": 1, "the": 2, "cat": 3, "dog": 4}
    base = _json_roundtrip(build_profile(kind="text", raw=texts, proba=None, predicted=["x"] * 60,
                                         class_names=["x", "y"], schema={"text": "text"}, vocab=vocab))
    assert set(base["features"]) == {"length", "oov_rate", "tokens"}
    tokens = base["features"]["tokens"]
    assert tokens["counts"]["the"] == 80 and "<other>" in tokens["counts"] and tokens["dispersion"] >= 1.0
    cur = build_profile(kind="text", raw=pd.DataFrame({"text": ["zebra zebra the", None]}), proba=None,
                        predicted=["y", "y"], class_names=["x", "y"], schema={"text": "text"}, vocab=vocab,
                        reference=base)
    assert list(cur["features"]["tokens"]["counts"]) == list(tokens["counts"])  # unseen words → <other>
    assert cur["features"]["tokens"]["counts"]["<other>"] == 2
    assert cur["features"]["length"]["missing"] == 1
    assert cur["predictions"]["classes"] == {"x": 0, "y": 2}


def test_tabular_profile_with_missing_values_and_unseen_categories():
    schema = {"label": "y", "features": [{"name": "island", "type": "categorical"},
                                         {"name": "mass", "type": "numeric"}]}
    frame = pd.DataFrame({"island": ["A", "B", None, "A"], "mass": [1.0, np.nan, 3.0, 4.0]})
    base = _json_roundtrip(build_profile(kind="tabular", raw=frame, proba=np.eye(2)[[0, 1, 0, 1]],
                                         class_names=["n", "p"], schema=schema))
    assert base["features"]["island"] == {"type": "categorical", "n": 3, "missing": 1, "counts": {"A": 2, "B": 1}}
    assert base["features"]["mass"]["missing"] == 1 and base["features"]["mass"]["n"] == 3
    cur = build_profile(kind="tabular", raw=[{"island": "C", "mass": "7"}], proba=np.array([[np.nan, np.nan]]),
                        class_names=["n", "p"], schema=schema, reference=base)
    assert cur["features"]["island"]["counts"] == {"A": 0, "B": 0, "C": 1}
    assert cur["predictions"]["classes"] == {"n": 0, "p": 0}  # a NaN row predicts nothing
    assert cur["predictions"]["confidence"]["missing"] == 1
    with pytest.raises(InvalidInput):
        build_profile(kind="audio", raw=[], proba=None, class_names=[], schema={})


# --------------------------------------------------------------------------- quality


def test_quality_by_hand():
    q = quality(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"], ["a", "b"])
    assert q["n"] == 5 and q["accuracy"] == 0.6
    assert q["classes"] == ["a", "b", "c"]  # c only in the labels: still counted
    assert q["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert q["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert q["per_class"]["b"]["precision"] == round(2 / 3, 4) and q["per_class"]["b"]["recall"] == 1.0
    assert q["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    empty = quality([], [], ["a"])
    assert empty["n"] == 0 and empty["accuracy"] is None
    with pytest.raises(InvalidInput):
        quality(["a"], [], ["a"])


def test_quality_matches_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score

    rng = np.random.default_rng(0)
    names = ["0", "1", "2", "3"]
    y = [str(v) for v in rng.integers(0, 4, 300)]
    p = [v if rng.random() < 0.7 else str(rng.integers(0, 4)) for v in y]
    q = quality(y, p, names)
    assert q["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-4)
    assert q["confusion_matrix"] == confusion_matrix(y, p, labels=names).tolist()
    prec = precision_score(y, p, labels=names, average=None)
    rec = recall_score(y, p, labels=names, average=None)
    for i, name in enumerate(names):
        assert q["per_class"][name]["precision"] == pytest.approx(prec[i], abs=1e-4)
        assert q["per_class"][name]["recall"] == pytest.approx(rec[i], abs=1e-4)


def test_quality_over_windows_and_shadow():
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    times = [t0 + timedelta(minutes=m) for m in (5, 50, 70, 190)]
    times[1] = "2026-01-01T10:50:00Z"  # ISO strings work too
    windows = quality_over_windows(times, ["a", "b", "a", "a"], ["a", "a", "a", "b"], ["a", "b"], timedelta(hours=1))
    assert [(w["start"], w["n"], w["accuracy"]) for w in windows] == [
        ("2026-01-01T10:00:00Z", 2, 0.5), ("2026-01-01T11:00:00Z", 1, 1.0), ("2026-01-01T13:00:00Z", 1, 0.0)]
    assert windows[0]["end"] == "2026-01-01T11:00:00Z"
    with pytest.raises(InvalidInput):
        quality_over_windows(times, ["a"], ["a"], ["a"], timedelta(hours=1))
    with pytest.raises(InvalidInput):
        quality_over_windows(["yesterday"], ["a"], ["a"], ["a"], timedelta(hours=1))
    s = shadow_comparison(["a", "b", None], ["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    assert s["production"]["accuracy"] == 0.5 and s["shadow"]["accuracy"] == 1.0
    assert s["agreement"] == round(2 / 3, 4) and s["labelled"] == 2 and s["accuracy_delta"] == 0.5


# --------------------------------------------------------------------------- report


class _Checker(HTMLParser):
    """Checks tags balance (void elements aside) and collects tag names."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()


def _check_html(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    assert "script" not in checker.tags
    assert not re.search(r"(https?:)?//[a-z]", page, flags=re.I), "the page must reference no URL"
    return checker


def _full_report() -> dict:
    from loopml.monitoring.drift import compare

    rng = np.random.default_rng(0)
    schema = {"label": "y", "features": [{"name": "<script>alert(1)</script>", "type": "numeric"},
                                         {"name": "colour", "type": "categorical"}]}
    def frame(n, shift):
        return pd.DataFrame({"<script>alert(1)</script>": rng.normal(shift, 1, n),
                             "colour": rng.choice(["red", "<b>blue</b>"], n)})
    proba_b, proba_c = rng.dirichlet(np.ones(2), 400), rng.dirichlet(np.ones(2), 300)
    base = build_profile(kind="tabular", raw=frame(400, 0), proba=proba_b, class_names=["n", "p"], schema=schema)
    cur = build_profile(kind="tabular", raw=frame(300, 2), proba=proba_c, class_names=["n", "p"], schema=schema,
                        reference=base)
    y, p = ["n", "p", "p"] * 10, ["n", "p", "n"] * 10
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return {"monitor": "m<1>", "endpoint": "digits", "variant": "AllTraffic", "model": "digits:3",
            "window": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00Z"},
            "rows": 300, "malformed": 2, "drift": compare(base, cur), "baseline": base, "current": cur,
            "quality": quality(y, p, ["n", "p"]),
            "quality_windows": quality_over_windows([t0 + timedelta(minutes=5 * i) for i in range(30)], y, p,
                                                    ["n", "p"], timedelta(minutes=30)),
            "shadow": {**shadow_comparison(y, p, y, ["n", "p"]), "production_variant": "AllTraffic",
                       "shadow_variant": "challenger"},
            "alerts": [{"id": "a1", "status": "open", "feature": "<script>alert(1)</script>", "metric": "psi",
                        "value": 3.2, "threshold": 0.2, "message": "drift"}]}


def test_render_html_full_report():
    report = _full_report()
    assert report["drift"]["violations"], "the shifted column must be violated"
    page = render_html(report)
    checker = _check_html(page)
    assert "svg" in checker.tags and "table" in checker.tags
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;blue&lt;/b&gt;" in page and "<b>blue</b>" not in page
    for name in ("colour", "prediction.class", "prediction.confidence", "accuracy per window", "Shadow vs production"):
        assert name in page
    json.dumps(report, allow_nan=False)  # what the run writes as report.json


@pytest.mark.parametrize("report", [{}, {"monitor": "bare"}, {"drift": None, "baseline": None, "quality": None},
                                    {"drift": {"insufficient": True, "reason": "12 rows", "features": []},
                                     "quality_windows": [{"start": "x", "accuracy": None}], "alerts": [None, {}]}])
def test_render_html_minimal_reports(report):
    page = render_html(report)
    _check_html(page)
    assert page.startswith("<!DOCTYPE html>")
