"""Accuracy before labels (monitoring/estimate.py): the calibration map of an over-confident model,
the interval's coverage of the realised accuracy over seeded windows (with and without a shift of
the confidences), ties, the floor check, and when there is no estimate."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.core.errors import InvalidInput
from loopml.monitoring.estimate import (MIN_CALIBRATION_ROWS, MIN_WINDOW_ROWS, check_estimate, estimate_accuracy,
                                        fit_calibration, why_no_estimate)


def over_confident(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A model that says c but is right with chance c³ (0.9 → 0.73); ``shift`` moves the traffic
    towards lower confidences (covariate shift: the confidences keep their meaning)."""
    c = np.round(0.3 + 0.7 * rng.beta(5.0 - 3.0 * shift, 1.2 + 2.0 * shift, n), 6)
    return c, rng.random(n) < c**3


def test_the_map_of_an_over_confident_model_says_how_often_it_is_right():
    c, right = over_confident(np.random.default_rng(0), 20_000)
    cal = fit_calibration(c, right)
    assert cal["n"] == 20_000 and sum(k[2] for k in cal["knots"]) == 20_000
    assert cal["accuracy"] == pytest.approx(right.mean(), abs=1e-6)
    knots = np.asarray(cal["knots"])
    assert (np.diff(knots[:, 0]) > 0).all() and (np.diff(knots[:, 1]) >= 0).all()  # monotone, one knot per value
    for stated in (0.6, 0.8, 0.9, 0.97):
        said = float(np.interp(stated, knots[:, 0], knots[:, 1]))
        assert said == pytest.approx(stated**3, abs=0.05), stated
    # the raw confidences overstate the accuracy; the estimate does not
    window_c, window_right = over_confident(np.random.default_rng(1), 2_000)
    estimate = estimate_accuracy(cal, window_c)
    assert window_c.mean() - window_right.mean() > 0.1
    assert abs(estimate["accuracy"] - window_right.mean()) < 0.03
    assert estimate["low"] <= window_right.mean() <= estimate["high"]
    assert (estimate["level"], estimate["n"], estimate["method"]) == (0.95, 2_000, "cbpe")


@pytest.mark.parametrize("calibration_rows,window,shift", [(200, 200, 0.0), (1_000, 1_000, 0.0), (1_000, 200, 0.5)])
def test_the_interval_covers_the_realised_accuracy_in_most_windows(calibration_rows, window, shift):
    covered, errors = 0, []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        cal = fit_calibration(*over_confident(rng, calibration_rows))
        c, right = over_confident(rng, window, shift)
        estimate = estimate_accuracy(cal, c)
        covered += estimate["low"] <= right.mean() <= estimate["high"]
        errors.append(estimate["accuracy"] - right.mean())
    assert covered / 200 >= 0.9, covered
    assert abs(float(np.mean(errors))) < 0.03  # no large bias, even with the confidences shifted


def test_rows_of_one_confidence_share_one_accuracy():
    """A confident model answers 1.0 for many rows: fit row by row, the isotonic blocks could split
    them and give 1.0 two accuracies (the estimate then read the higher one)."""
    c = [0.5] * 30 + [1.0] * 40
    right = [0, 1] * 15 + [0] * 5 + [1] * 30 + [0] * 5  # at 1.0: 30 of 40 right
    cal = fit_calibration(c, right)
    assert cal["knots"] == [[0.5, 0.5, 30], [1.0, 0.75, 40]]
    assert estimate_accuracy(cal, [1.0] * 100)["accuracy"] == 0.75


def test_no_estimate_without_a_map_or_enough_rows():
    rng = np.random.default_rng(3)
    c, right = over_confident(rng, 500)
    cal = fit_calibration(c, right)
    assert fit_calibration(c[:MIN_CALIBRATION_ROWS - 1], right[:MIN_CALIBRATION_ROWS - 1]) is None
    assert fit_calibration([np.nan] * 60 + list(c[:40]), [1] * 100) is None  # NaN confidences do not count
    assert estimate_accuracy(None, c) is None
    assert estimate_accuracy({}, c) is None
    assert estimate_accuracy({"knots": []}, c) is None
    assert estimate_accuracy(cal, c[:MIN_WINDOW_ROWS - 1]) is None
    assert estimate_accuracy(cal, list(c[:MIN_WINDOW_ROWS - 1]) + [np.nan] * 10) is None
    assert estimate_accuracy(cal, c[:MIN_WINDOW_ROWS])["n"] == MIN_WINDOW_ROWS
    with pytest.raises(InvalidInput, match="level"):
        estimate_accuracy(cal, c, level=95)

    assert "predates accuracy estimates" in why_no_estimate({"rows": 10}, 500, "digits:1")
    assert "`loopml monitors baseline digits:1`" in why_no_estimate({}, 500, "digits:1")
    none = {"calibration": None, "source": {"calibration": "no calibration: 12 labelled held-out rows < 50"}}
    assert "12 labelled held-out rows" in why_no_estimate(none, 500, "digits:1")
    assert why_no_estimate({"calibration": cal}, 10, "digits:1") == f"10 rows < {MIN_WINDOW_ROWS}"
    assert why_no_estimate({"calibration": cal}, 500, "digits:1") is None


def test_the_floor_is_crossed_only_when_the_whole_interval_is_below_it():
    estimate = {"accuracy": 0.8, "low": 0.75, "high": 0.85, "level": 0.95, "n": 300}
    below = check_estimate(estimate, 0.9)
    assert (below["name"], below["type"], below["violated"], below["overruled"]) == \
        ("quality.estimated_accuracy", "quality", True, False)
    assert below["statistics"] == {"accuracy": 0.8, "low": 0.75, "high": 0.85, "level": 0.95}
    assert below["thresholds"] == {"accuracy": 0.9} and below["n_current"] == 300
    assert check_estimate(estimate, 0.85)["violated"] is False  # the interval reaches the floor: not shown below
    assert check_estimate(estimate, 0.82)["violated"] is False
    overruled = check_estimate(estimate, 0.9, labels_passed=True)  # labels that passed are the stronger evidence
    assert (overruled["violated"], overruled["overruled"]) == (False, True)
    assert check_estimate(estimate, 0.7, labels_passed=True)["overruled"] is False


def test_calibration_of_held_out_predictions():
    """The baseline's map: top-class confidence rounded as served answers are, right = argmax class
    equals the label; labels outside the model's classes give no map, with a note saying why."""
    from loopml.monitoring.baseline_job import calibration_of

    rng = np.random.default_rng(5)
    proba = rng.dirichlet([0.3, 0.3, 0.3], 400)
    predicted = np.asarray(["a", "b", "c"], dtype=object)[proba.argmax(axis=1)]
    labels = np.where(rng.random(400) < 0.7, predicted, "c")
    cal, note = calibration_of(proba, labels, ["a", "b", "c"])
    assert cal["n"] == 400 and cal["accuracy"] == pytest.approx(float(np.mean(labels == predicted)), abs=1e-6)
    assert "calibrated on 400 held-out rows" in note
    assert all(k[0] == round(k[0], 6) for k in cal["knots"])
    assert calibration_of(proba, ["x"] * 400, ["a", "b", "c"]) == \
        (None, "no calibration: none of the held-out labels is one of the model's classes")
    assert calibration_of(proba[:10], labels[:10], ["a", "b", "c"])[0] is None
    assert calibration_of(proba[:0], labels[:0], ["a", "b", "c"])[0] is None
