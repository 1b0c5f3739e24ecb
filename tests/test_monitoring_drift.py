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
    assert item["statistics"]["psi"] >= item["thresholds"]["psi"] == DEFAULT_THRESHOLDS["psi"]


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
    assert item["statistics"]["chi2_pvalue"] < DEFAULT_THRESHOLDS["chi2_pvalue"] / result["bonferroni_m"]


def test_too_few_rows_is_insufficient_not_a_violation(digits, digits_split):
    base, rest = digits_split
    result = digits.compare(digits.images[base], 16.0 - digits.images[rest[:150]])
    assert result["insufficient"] and result["violations"] == [] and "150 rows" in result["reason"]
    assert result["features"] and not any(f["violated"] for f in result["features"])
    # the same window counts with a lower min_samples
    lowered = digits.compare(digits.images[base], 16.0 - digits.images[rest[:150]],
                             thresholds={"min_samples": 100})
    assert not lowered["insufficient"] and lowered["violations"]
    assert lowered["thresholds"]["min_samples"] == 100


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
    assert parse_thresholds(["psi=0.3", " min_samples = 500 ", "accuracy=0.9"]) == {
        "psi": 0.3, "min_samples": 500, "accuracy": 0.9}
    for bad in (["psi"], ["nope=1"], ["psi=abc"], ["ks_pvalue=0"], ["ks_pvalue=2"], ["js_distance=1.5"],
                ["min_samples=2.5"], ["min_samples=0"], ["psi=-1"], ["mmd=nan"], ["=3"]):
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
