"""The superclass test with a cluster bootstrap by true class, on constructed errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarlens.analysis import metrics as M
from cifarlens.analysis.superclass_stats import superclass_cluster_test

F2C = np.repeat(np.arange(20), 5)  # CIFAR-100's shape: 20 superclasses of 5 classes


def _errors(within_per_class: list[int], errors_per_class: int = 10, right_per_class: int = 40
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per true class c: some right predictions, `within` errors into the next class of the
    same superclass, the rest into a class of the next superclass."""
    y, p = [], []
    for c, k in enumerate(within_per_class):
        same = 5 * (c // 5) + (c + 1) % 5
        other = (c + 5) % 100
        y += [c] * (right_per_class + errors_per_class)
        p += [c] * right_per_class + [same] * k + [other] * (errors_per_class - k)
    return np.array(y), np.array(p)


def test_identical_classes_give_a_point_interval_and_the_chance_share():
    y, p = _errors([4] * 100)
    r = superclass_cluster_test(y, p, F2C, n_boot=500)
    assert r["share"] == pytest.approx(0.4) and r["chance_share"] == pytest.approx(4 / 99)
    assert r["share_ci"] == pytest.approx([0.4, 0.4])
    assert r["diff_ci"] == pytest.approx([0.4 - 4 / 99] * 2)
    assert r["decision"] == "above chance" and r["ratio"] == pytest.approx(0.4 * 99 / 4)
    assert (r["errors"], r["errors_within_superclass"]) == (1000, 400)


def test_cluster_standard_error_matches_the_sampling_of_classes():
    # half the classes send every error into the superclass, half none; equal error counts,
    # so the share is the mean of 100 zeros and ones over resampled classes: SE 0.5 / sqrt(100)
    y, p = _errors([10, 0] * 50)
    r = superclass_cluster_test(y, p, F2C, n_boot=20_000, seed=1)
    assert r["share"] == pytest.approx(0.5)
    assert r["share_se"] == pytest.approx(0.5 / math.sqrt(100), rel=0.05)


def test_clustered_errors_widen_the_interval_the_binomial_test_overstates():
    # 8 of 100 classes put all 10 errors into their superclass, the others none: 80 of 1,000
    # errors (8%) against 4.04% by chance. The binomial test, counting errors as independent,
    # rejects strongly; resampling classes shows 8 classes out of 100 are not enough evidence.
    y, p = _errors([10] * 8 + [0] * 92)
    binom = M.superclass_report(y, p, F2C)
    assert binom["binomial_p"] < 1e-5
    r = superclass_cluster_test(y, p, F2C, seed=2)
    assert r["share"] == pytest.approx(0.08)
    assert r["decision"] == "not distinguishable" and r["diff_ci"][0] < 0 < r["diff_ci"][1]
    cp = binom["share_ci"]
    assert (r["share_ci"][1] - r["share_ci"][0]) > 2.5 * (cp[1] - cp[0])


def test_independent_errors_agree_with_the_binomial_standard_error():
    rng = np.random.default_rng(3)
    within = rng.binomial(10, 0.3, size=100).tolist()  # each error in the superclass w.p. 0.3
    y, p = _errors(within)
    r = superclass_cluster_test(y, p, F2C, n_boot=20_000, seed=4)
    s = r["share"]
    assert r["share_se"] == pytest.approx(math.sqrt(s * (1 - s) / 1000), rel=0.15)


def test_chance_weights_each_error_by_its_superclass_size_and_degenerate_cases():
    # 4 classes: superclass 0 = {0, 1, 2}, superclass 1 = {3}; chance for an error of a class in
    # superclass 0 is 2/3, of class 3 is 0; errors: 3 of class 0 (2 within), 1 of class 3
    f2c = np.array([0, 0, 0, 1])
    y = np.array([0, 0, 0, 3, 1, 2])
    p = np.array([1, 2, 3, 0, 1, 2])
    r = superclass_cluster_test(y, p, f2c, n_boot=200)
    assert r["share"] == pytest.approx(2 / 4)
    assert r["chance_share"] == pytest.approx((3 * 2 / 3 + 0) / 4)
    assert r["clusters"] == 4 and r["clusters_with_errors"] == 2
    none = superclass_cluster_test(y[4:], p[4:], f2c)
    assert none["decision"] == "not tested" and none["share"] is None
    one = superclass_cluster_test(y[:3], p[:3], f2c)
    assert one["decision"] == "not tested" and one["share"] == pytest.approx(2 / 3)
