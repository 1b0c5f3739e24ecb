"""monitoring/drift.py at DEFAULT_THRESHOLDS on real data sets (seeded, deterministic):

- false alarms: 20 windows of unshifted traffic give at most 1 window with a violation
  (digits images + an MLP's classes, confidences and penultimate-layer embeddings; penguins rows;
  BBC news texts);
- detection at 200 rows: inverted images, a changed class mix, a shifted numeric column, a new
  categorical mix, texts of one topic / in another "language";
- too few rows, threshold validation and the accuracy floor.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

from loopml.core.errors import InvalidInput
from loopml.datasets.samples import load_sample
from loopml.datasets.schema import infer_schema
from loopml.monitoring.drift import DEFAULT_THRESHOLDS, check_quality, compare, parse_thresholds, validate_thresholds
from loopml.monitoring.features import tokenize
from loopml.monitoring.profile import build_profile

WINDOWS = 20
ALLOWED_FALSE_ALARMS = 1


def _violated(result: dict) -> set[str]:
    return {v["name"] for v in result["violations"]}


# --------------------------------------------------------------------------- digits (images)


class Digits:
    """sklearn digits (8×8, pixels 0..16) and a small MLP trained on 500 of them; the other rows
    are the monitored population. ``embed`` = the MLP's hidden (penultimate) layer."""

    def __init__(self) -> None:
        from sklearn.neural_network import MLPClassifier

        content = load_sample("digits")
        self.schema = infer_schema(content)
        self.names = list(self.schema["classes"])
        self.images = content.images.astype(np.float64)
        self.labels = np.asarray(content.labels, dtype=str)
        order = np.random.default_rng(0).permutation(len(self.images))
        train, self.pool = order[:500], order[500:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: good enough for a monitored model
            self.model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(
                self._flat(self.images[train]), self.labels[train])
        assert [str(c) for c in self.model.classes_] == sorted(self.names)

    def _flat(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1) / 16.0

    def proba(self, images: np.ndarray) -> np.ndarray:
        p = self.model.predict_proba(self._flat(images))
        order = [list(map(str, self.model.classes_)).index(n) for n in self.names]
        return p[:, order]

    def embed(self, images: np.ndarray) -> np.ndarray:
        return np.maximum(self._flat(images) @ self.model.coefs_[0] + self.model.intercepts_[0], 0.0)

    def profile(self, images: np.ndarray, reference: dict | None = None) -> dict:
        return build_profile(kind="image", raw=images, proba=self.proba(images), class_names=self.names,
                             schema=self.schema, embeddings=self.embed(images), reference=reference)

    def compare(self, base_images: np.ndarray, cur_images: np.ndarray, seed: int = 0, **kw) -> dict:
        base = self.profile(base_images)
        cur = self.profile(cur_images, reference=base)
        return compare(base, cur, baseline_embeddings=self.embed(base_images),
                       current_embeddings=self.embed(cur_images), seed=seed, **kw)


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


def test_digits_unshifted_windows_rarely_alarm(digits):
    alarms = []
    for w in range(WINDOWS):
        rng = np.random.default_rng(100 + w)
        rows = rng.permutation(digits.pool)
        size = int(rng.integers(200, 701))
        result = digits.compare(digits.images[rows[:597]], digits.images[rows[597:597 + size]], seed=w)
        assert not result["insufficient"]
        assert {f["name"] for f in result["features"]} >= {"mean_intensity", "ink_fraction", "prediction.class",
                                                          "prediction.confidence", "embedding"}
        if result["violations"]:
            alarms.append((w, _violated(result)))
    assert len(alarms) <= ALLOWED_FALSE_ALARMS, alarms


@pytest.fixture(scope="module")
def digits_split(digits):
    rows = np.random.default_rng(7).permutation(digits.pool)
    return rows[:597], rows[597:]


def test_digits_inverted_images_detected_at_200_rows(digits, digits_split):
    base, rest = digits_split
    result = digits.compare(digits.images[base], 16.0 - digits.images[rest[:200]])
    assert {"mean_intensity", "ink_fraction", "embedding"} <= _violated(result)
    item = next(f for f in result["violations"] if f["name"] == "mean_intensity")
    assert item["n_current"] == 200 and item["n_baseline"] == 597
    assert item["statistics"]["ks_pvalue"] < item["thresholds"]["ks_pvalue"]
    assert item["statistics"]["shift"] >= item["thresholds"]["shift"] == DEFAULT_THRESHOLDS["shift"]
    assert item["statistics"]["psi"] > 1  # reported, no longer the gate


def test_digits_changed_class_mix_detected_at_200_rows(digits, digits_split):
    base, rest = digits_split
    labels = digits.labels[rest]
    # 60 % zeros and ones (normally 20 %), the rest as usual
    mix = np.concatenate([rest[np.isin(labels, ["0", "1"])][:120], rest[~np.isin(labels, ["0", "1"])][:80]])
    assert len(mix) == 200
    result = digits.compare(digits.images[base], digits.images[mix])
    assert "prediction.class" in _violated(result)
    item = next(f for f in result["violations"] if f["name"] == "prediction.class")
    assert item["statistics"]["js_distance"] >= DEFAULT_THRESHOLDS["js_distance"]
    assert item["statistics"]["chi2_pvalue"] < item["thresholds"]["chi2_pvalue"] <= DEFAULT_THRESHOLDS["chi2_pvalue"]
    assert result["correction"] == "holm" and result["tests"] >= len(result["features"])


def test_too_few_rows_judges_only_what_is_already_decisive(digits, digits_split):
    base, rest = digits_split
    # 50 inverted images: decisive at once (early verdict), the embedding test waits for min_samples
    inverted = digits.compare(digits.images[base], 16.0 - digits.images[rest[:50]])
    assert inverted["early"] and not inverted["insufficient"] and "50 rows" in inverted["reason"]
    assert {"mean_intensity", "ink_fraction"} <= _violated(inverted)
    assert all(v["early"] for v in inverted["violations"])
    assert "embedding" not in {f["name"] for f in inverted["features"]}
    item = next(f for f in inverted["violations"] if f["name"] == "mean_intensity")
    assert item["statistics"]["log10_evidence"] >= item["thresholds"]["log10_evidence"]
    # 150 ordinary images: nothing decisive → insufficient, no violation
    plain = digits.compare(digits.images[base], digits.images[rest[:150]])
    assert plain["early"] and plain["insufficient"] and plain["violations"] == []
    assert "nothing decisive" in plain["reason"]
    # the same window gets the full tests with a lower min_samples
    lowered = digits.compare(digits.images[base], 16.0 - digits.images[rest[:150]],
                             thresholds={"min_samples": 100})
    assert not lowered["early"] and not lowered["insufficient"] and lowered["violations"]
    assert lowered["thresholds"]["min_samples"] == 100 and "embedding" in _violated(lowered)


# --------------------------------------------------------------------------- penguins (tabular)


@pytest.fixture(scope="module")
def penguins():
    content = load_sample("penguins")
    return content, infer_schema(content)


def _penguin_profiles(content, schema, base_rows, cur_rows, frame_fn=None):
    classes = list(schema["classes"])

    def proba(rows):  # a "model" that is right 85 % of the time, with softish confidences
        rng = np.random.default_rng(len(rows))
        truth = np.array([classes.index(v) for v in content.labels[rows]])
        pred = np.where(rng.random(len(rows)) < 0.85, truth, rng.integers(0, len(classes), len(rows)))
        p = rng.dirichlet(np.ones(len(classes)), len(rows)) * 0.4
        p[np.arange(len(rows)), pred] += 0.6
        return p

    base_frame = content.frame.iloc[base_rows].reset_index(drop=True)
    cur_frame = content.frame.iloc[cur_rows].reset_index(drop=True)
    if frame_fn is not None:
        cur_frame = frame_fn(cur_frame)
    base = build_profile(kind="tabular", raw=base_frame, proba=proba(base_rows), class_names=classes, schema=schema)
    cur = build_profile(kind="tabular", raw=cur_frame, proba=proba(cur_rows), class_names=classes, schema=schema,
                        reference=base)
    return base, cur


def test_penguins_unshifted_halves_rarely_alarm(penguins):
    content, schema = penguins
    alarms = []
    for w in range(WINDOWS):
        rows = np.random.default_rng(200 + w).permutation(len(content))
        half = len(rows) // 2
        base, cur = _penguin_profiles(content, schema, rows[:half], rows[half:])
        # penguins has 344 rows: windows of 172, so min_samples is lowered to let them count
        result = compare(base, cur, thresholds={"min_samples": 150})
        assert not result["insufficient"]
        if result["violations"]:
            alarms.append((w, _violated(result)))
    assert len(alarms) <= ALLOWED_FALSE_ALARMS, alarms


def test_penguins_shifted_numeric_and_categorical_columns_detected(penguins):
    content, schema = penguins
    rows = np.random.default_rng(3).permutation(len(content))
    half = len(rows) // 2

    def heavier(frame):
        frame = frame.copy()
        frame["body_mass_g"] = frame["body_mass_g"] + 800.0  # +1 sd
        return frame

    base, cur = _penguin_profiles(content, schema, rows[:half], rows[half:], heavier)
    result = compare(base, cur, thresholds={"min_samples": 150})
    assert _violated(result) == {"body_mass_g"}
    item = result["violations"][0]
    assert item["type"] == "numeric" and item["mean_current"] - item["mean_baseline"] == pytest.approx(800, abs=200)

    def one_island(frame):
        frame = frame.copy()
        frame["island"] = "Torgersen"
        return frame

    base, cur = _penguin_profiles(content, schema, rows[:half], rows[half:], one_island)
    result = compare(base, cur, thresholds={"min_samples": 150})
    assert _violated(result) == {"island"}

    def sensor_failure(frame):  # bill depth stops being reported
        frame = frame.copy()
        frame.loc[: len(frame) // 2, "bill_depth_mm"] = np.nan
        return frame

    base, cur = _penguin_profiles(content, schema, rows[:half], rows[half:], sensor_failure)
    result = compare(base, cur, thresholds={"min_samples": 150})
    assert _violated(result) == {"bill_depth_mm"}
    stats = result["violations"][0]["statistics"]
    assert stats["missing_current"] > 0.4 and stats["missing_pvalue"] < 1e-6


# --------------------------------------------------------------------------- BBC news (text)


@pytest.fixture(scope="module")
def bbc():
    content = load_sample("bbc-news")
    schema = infer_schema(content)
    rows = np.random.default_rng(0).permutation(len(content))
    texts = content.texts
    # the vocabulary comes from other texts than the baseline's, as a model's training split
    # would be distinct from the held-out rows its baseline should describe
    counter = collections.Counter(t for i in rows[:800] for t in tokenize(texts[i]))
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, (w, _) in enumerate(counter.most_common(5000))}}
    base_rows, pool = rows[800:1500], rows[1500:]
    labels = np.asarray(content.labels, dtype=str)

    def profile(rows, reference=None, transform=None):
        raw = [transform(texts[i]) if transform else texts[i] for i in rows]
        return build_profile(kind="text", raw=raw, proba=None, predicted=list(labels[rows]),
                             confidence=np.full(len(rows), 0.9), class_names=schema["classes"], schema=schema,
                             vocab=vocab, reference=reference)

    return profile(base_rows), pool, labels, profile


def test_bbc_unshifted_windows_rarely_alarm(bbc):
    base, pool, _, profile = bbc
    alarms = []
    for w in range(WINDOWS // 2):  # text profiles are the slowest: 10 windows here
        rng = np.random.default_rng(300 + w)
        rows = rng.permutation(pool)[: int(rng.integers(200, 501))]
        result = compare(base, profile(rows, base))
        if result["violations"]:
            alarms.append((w, _violated(result)))
    assert len(alarms) <= ALLOWED_FALSE_ALARMS, alarms


def test_bbc_topic_and_language_shift_detected_at_200_rows(bbc):
    base, pool, labels, profile = bbc
    # 80 % sports stories (normally ~23 %)
    sport = np.concatenate([pool[labels[pool] == "sports"][:160], pool[labels[pool] != "sports"][:40]])
    assert len(sport) == 200
    # the class mix catches a topic shift; the top-100 token profile (mostly function words) barely moves
    assert "prediction.class" in _violated(compare(base, profile(sport, base)))
    garbled = compare(base, profile(pool[:200], base, transform=lambda s: " ".join(w + "ez" for w in s.split())))
    assert {"oov_rate", "tokens"} <= _violated(garbled)


# --------------------------------------------------------------------------- thresholds and quality


def test_thresholds_are_validated():
    assert parse_thresholds(["psi=0.3", " min_samples = 500 ", "accuracy=0.9", "shift=0.25"]) == {
        "psi": 0.3, "min_samples": 500, "accuracy": 0.9, "shift": 0.25}
    for bad in (["psi"], ["nope=1"], ["psi=abc"], ["ks_pvalue=0"], ["ks_pvalue=2"], ["js_distance=1.5"],
                ["min_samples=2.5"], ["min_samples=0"], ["psi=-1"], ["mmd=nan"], ["=3"], ["shift=-0.1"],
                ["early_level=0"], ["early_level=1.5"]):
        with pytest.raises(InvalidInput):
            parse_thresholds(bad)
    assert validate_thresholds({"psi": None}) == {}
    with pytest.raises(InvalidInput):
        compare({}, {}, thresholds={"bogus": 1})
    empty = compare({}, {"rows": 500})
    assert empty["features"] == [] and empty["violations"] == [] and not empty["insufficient"]


def test_accuracy_floor_needs_evidence():
    assert not check_quality({"n": 500, "accuracy": 0.5})["violated"]  # no floor by default
    assert check_quality({"n": 500, "accuracy": 0.80}, {"accuracy": 0.9})["violated"]
    assert not check_quality({"n": 5, "accuracy": 0.8}, {"accuracy": 0.9})["violated"]  # 4 of 5: could be luck
    assert not check_quality({"n": 500, "accuracy": 0.95}, {"accuracy": 0.9})["violated"]
    assert not check_quality({"n": 0, "accuracy": None}, {"accuracy": 0.9})["violated"]
    assert not check_quality(None, {"accuracy": 0.9})["violated"]


def test_a_confident_models_served_answers_match_its_baseline(digits, digits_split):
    """Served answers carry 6 decimals; a confident model's baseline confidences (0.99999988 …)
    must be profiled at that precision, else clean traffic of the same rows looks drifted."""
    import orjson

    from loopml.serving.codecs import encode_predictions

    base, _rest = digits_split
    rng = np.random.default_rng(3)
    n, k = len(base), len(digits.names)
    winners = rng.integers(0, k, n)
    margin = 10.0 ** -rng.uniform(4.0, 9.0, n)  # confidences 1 - 1e-4 … 1 - 1e-9, as a saturated CNN gives
    proba = np.full((n, k), 0.0)
    proba[np.arange(n), winners] = 1.0 - margin
    proba += (margin / (k - 1))[:, None] * (np.arange(k)[None, :] != winners[:, None])
    images = digits.images[base]
    baseline = build_profile(kind="image", raw=images, proba=proba, class_names=digits.names, schema=digits.schema)
    served = orjson.loads(encode_predictions(proba[:300], digits.names))["predictions"]
    current = build_profile(kind="image", raw=images[:300], proba=None, class_names=digits.names,
                            schema=digits.schema, reference=baseline,
                            predicted=[p["label"] for p in served],
                            confidence=np.asarray([p["confidence"] for p in served]))
    result = compare(baseline, current)
    conf = next(f for f in result["features"] if f["name"] == "prediction.confidence")
    assert not conf["violated"], conf["statistics"]


# --------------------------------------------------------------------------- statistical properties
# A synthetic population (5 numeric columns that depend on the class, one categorical column, a
# fixed linear "model"), so windows of any size are fresh draws: false alarms under no shift and
# power per shift size are properties of the rule, pinned here with fixed seeds.

SYNTH_SCHEMA = {"columns": [*[{"name": f"x{i}", "type": "numeric"} for i in range(5)],
                            {"name": "cat", "type": "categorical"}], "classes": ["a", "b", "c"]}
SYNTH_WEIGHTS = np.random.default_rng(99).normal(size=(5, 3))


def _synthetic(n: int, seed: int, *, shift: float = 0.0, prior: list[float] | None = None):
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n) if prior is None else rng.choice(3, n, p=prior)
    x = rng.normal(size=(n, 5)) + y[:, None] * 0.5
    x[:, 0] += shift * 1.15  # x0's standard deviation (a unit normal plus the class offset)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    frame["cat"] = np.array(["u", "v", "w"])[(y + rng.integers(0, 2, n)) % 3]
    logits = x @ SYNTH_WEIGHTS
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    return frame, proba / proba.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def synth_baseline():
    frame, proba = _synthetic(5000, 0)
    return build_profile(kind="tabular", raw=frame, proba=proba, class_names=SYNTH_SCHEMA["classes"],
                         schema=SYNTH_SCHEMA)


def _synth_compare(baseline, n: int, seed: int, **shift) -> dict:
    frame, proba = _synthetic(n, seed, **shift)
    current = build_profile(kind="tabular", raw=frame, proba=proba, class_names=SYNTH_SCHEMA["classes"],
                            schema=SYNTH_SCHEMA, reference=baseline)
    return compare(baseline, current)


def _detection(baseline, n: int, windows: int, **shift) -> float:
    return sum(bool(_synth_compare(baseline, n, 10_000 * n + w, **shift)["violations"])
               for w in range(windows)) / windows


def test_unshifted_windows_rarely_alarm_at_every_size(synth_baseline):
    # early looks (50), full tests (200, 1,000) and a large window (10,000): ≤ 1 in 20 each
    for n, windows in ((50, 40), (200, 40), (1000, 40), (10_000, 20)):
        rate = _detection(synth_baseline, n, windows)
        assert rate <= 0.05, (n, rate)


def test_more_rows_never_mean_fewer_detections(synth_baseline):
    at_200 = _detection(synth_baseline, 200, 20, shift=0.25)
    at_1000 = _detection(synth_baseline, 1000, 20, shift=0.25)
    assert at_1000 >= 0.9 and at_1000 >= at_200
    assert _detection(synth_baseline, 200, 20, shift=0.5) >= 0.95
    assert _detection(synth_baseline, 1000, 20, prior=[4 / 6, 1 / 6, 1 / 6]) >= 0.9  # one class at 4× its odds


def test_effect_sizes_carry_no_small_sample_bias(synth_baseline):
    def median_shift(n: int, shift: float) -> float:
        values = [next(f for f in _synth_compare(synth_baseline, n, 500 + w, shift=shift)["features"]
                       if f["name"] == "x0")["statistics"]["shift"] for w in range(15)]
        return float(np.median(values))

    # the raw Wasserstein distance of two same-distribution samples shrinks like 1/√n; corrected, it
    # is ≈ 0 at every size, and a 0.5-std shift reads ≈ 0.5 at 200 rows and at 5,000 alike
    assert median_shift(200, 0.0) < 0.05 and median_shift(5000, 0.0) < 0.05
    assert median_shift(200, 0.5) == pytest.approx(0.5, abs=0.08)
    assert median_shift(5000, 0.5) == pytest.approx(0.5, abs=0.05)


def test_early_looks_hold_their_false_alarm_rate_however_often_they_peek(synth_baseline):
    # a monitor re-reads a window that is still filling up: 10 looks from 10 to 190 rows, 40 windows
    alarmed = 0
    for w in range(40):
        frame, proba = _synthetic(190, 7_000 + w)
        for n in range(10, 200, 20):
            current = build_profile(kind="tabular", raw=frame.iloc[:n], proba=proba[:n],
                                    class_names=SYNTH_SCHEMA["classes"], schema=SYNTH_SCHEMA,
                                    reference=synth_baseline)
            result = compare(synth_baseline, current)
            assert result["early"]
            if result["violations"]:
                alarmed += 1
                break
    assert alarmed <= 1  # early_level 0.01 over all looks of a window


def test_class_prior_shift_is_tested_on_the_predicted_classes(synth_baseline):
    # only the answers move (inputs as usual): the predicted-class mix is its own test
    frame, proba = _synthetic(1000, 42)
    predicted = list(np.array(["a", "b", "c"])[np.random.default_rng(1).choice(3, 1000, p=[0.6, 0.2, 0.2])])
    current = build_profile(kind="tabular", raw=frame, proba=None, predicted=predicted,
                            confidence=proba.max(axis=1), class_names=SYNTH_SCHEMA["classes"],
                            schema=SYNTH_SCHEMA, reference=synth_baseline)
    result = compare(synth_baseline, current)
    assert _violated(result) == {"prediction.class"}
    item = result["violations"][0]
    assert item["statistics"]["js_distance"] < item["statistics"]["js_distance_raw"]  # noise taken off


def test_the_ks_test_reads_the_whole_window(synth_baseline):
    frame, proba = _synthetic(50_000, 3)
    current = build_profile(kind="tabular", raw=frame, proba=proba, class_names=SYNTH_SCHEMA["classes"],
                            schema=SYNTH_SCHEMA, reference=synth_baseline)
    assert current["features"]["x0"]["ks"]["n"] == 50_000  # not the 2,000-value sample
    assert len(current["features"]["x0"]["sample"]) == 2000
    assert len(synth_baseline["features"]["x0"]["sample"]) == 5000  # every profiled baseline row
