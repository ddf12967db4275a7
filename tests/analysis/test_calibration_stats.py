"""ECE intervals over test images, the seed-level test of a calibration change, and the rule
that only that test concludes anything."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarlens.analysis import metrics as M
from cifarlens.analysis.calibration_stats import (
    calibration_claim,
    ece_interval,
    ece_scaling_intervals,
    ece_seed_change,
)
from cifarlens.errors import CifarlensError


def _two_class_probs(conf: np.ndarray) -> np.ndarray:
    return np.stack([conf, 1 - conf], axis=1)


def test_point_estimates_are_metrics_ece_including_bin_edges():
    rng = np.random.default_rng(0)
    n = 3000
    z = rng.normal(size=(n, 10)) * 2
    y = rng.integers(0, 10, n)
    r = ece_scaling_intervals(z, y, 1.7, n_boot=50)
    assert r["before"]["ece"] == pytest.approx(M.ece(M.softmax(z), y), abs=1e-12)
    assert r["after"]["ece"] == pytest.approx(M.ece(M.apply_temperature(z, 1.7), y), abs=1e-12)
    # confidences exactly on the edges k/15, and exactly 1.0 (the last bin, no hidden bin)
    conf = np.concatenate([np.arange(8, 16) / 15, [1.0, 1.0, 0.5]])
    p = _two_class_probs(conf)
    labels = np.arange(conf.size) % 2
    assert ece_interval(p, labels, n_boot=20)["ece"] == pytest.approx(M.ece(p, labels), abs=1e-12)
    for bins in (1, 10, 15):
        assert (ece_interval(p, labels, n_bins=bins, n_boot=20)["ece"]
                == pytest.approx(M.ece(p, labels, n_bins=bins), abs=1e-12))


def test_bootstrap_interval_of_a_one_bin_ece_is_the_binomial_one():
    # every confidence 0.6, accuracy q = 0.8 on 400 images: ECE = q_hat - 0.6 on every
    # resample that keeps q_hat > 0.6 (all, in practice), so its SE is sqrt(q(1 - q) / n)
    n, q = 400, 0.8
    right = np.arange(n) < int(q * n)
    p = _two_class_probs(np.full(n, 0.6))
    labels = np.where(right, 0, 1)
    r = ece_interval(p, labels, n_boot=4000, seed=3)
    se = math.sqrt(q * (1 - q) / n)
    assert r["ece"] == pytest.approx(0.2)
    assert r["se"] == pytest.approx(se, rel=0.06)
    assert r["lo"] == pytest.approx(0.2 - 1.96 * se, abs=0.006)
    assert r["hi"] == pytest.approx(0.2 + 1.96 * se, abs=0.006)
    assert ece_interval(p, labels, n_boot=4000, seed=3) == r  # seeded
    assert r["covers"].startswith("test-image sampling")


def test_scaling_change_is_paired_on_the_same_resamples():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1000, 5)) * 3
    y = rng.integers(0, 5, 1000)
    same = ece_scaling_intervals(z, y, 1.0, n_boot=200)
    assert same["change"]["diff"] == 0.0
    assert same["change"]["lo"] == 0.0 and same["change"]["hi"] == 0.0
    r = ece_scaling_intervals(z, y, 3.0, n_boot=400)
    assert r["change"]["diff"] == pytest.approx(r["after"]["ece"] - r["before"]["ece"])
    assert r["change"]["lo"] <= r["change"]["diff"] <= r["change"]["hi"]
    # paired resamples: the change is far tighter than the two intervals side by side
    assert r["change"]["se"] < 0.5 * math.hypot(r["before"]["se"], r["after"]["se"])
    with pytest.raises(CifarlensError):
        ece_interval(M.softmax(z), y, n_boot=1)


def test_seed_level_calibration_verdicts():
    # the three seeds: +1.41, -3.54, +3.84 points of ECE change: no conclusion
    base = np.array([0.080, 0.090, 0.085])
    mixed = ece_seed_change(base, base + np.array([0.0141, -0.0354, 0.0384]), margin=0.01)
    assert mixed["verdict"] == "not decided" and calibration_claim(mixed) is None
    assert mixed["per_seed"] == pytest.approx([0.0141, -0.0354, 0.0384])
    # consistently lower ECE on every seed: better calibrated
    lower = ece_seed_change(base, base - np.array([0.020, 0.021, 0.019]))
    assert lower["verdict"] == "better calibrated" == calibration_claim(lower)
    higher = ece_seed_change(base, base + np.array([0.020, 0.021, 0.019]))
    assert calibration_claim(higher) == "worse calibrated"
    # the same ECE within +/-1 point on every seed: equally calibrated
    same = ece_seed_change(base, base + np.array([0.0005, -0.0004, 0.0001, 0.0])[:3], margin=0.01)
    assert calibration_claim(same) == "equally calibrated"
    # one seed (or none): never a claim, however large the gap
    assert calibration_claim(ece_seed_change([0.08], [0.2])) is None
    assert calibration_claim(None) is None
