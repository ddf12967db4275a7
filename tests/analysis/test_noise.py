"""Variance sources of a seed-paired comparison on constructed and simulated right/wrong data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarlens.analysis.noise import image_sampling_sd, variance_sources
from cifarlens.analysis.stats import accuracy_difference_ci
from cifarlens.errors import CifarlensError


def test_image_sampling_sd_is_the_paired_wald_standard_error():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.random(1000) < 0.6, rng.random(1000) < 0.65
        ref = accuracy_difference_ci(a, b)["se"]
        assert image_sampling_sd(int(np.sum(a & ~b)), int(np.sum(~a & b)), 1000) == pytest.approx(ref)
    # by hand: 30 and 50 discordant of 1,000: sqrt(80 - 20^2 / 1000) / 1000
    assert image_sampling_sd(30, 50, 1000) == pytest.approx(math.sqrt(79.6) / 1000)
    per_seed = image_sampling_sd([30, 0], [50, 0], [1000, 1000])
    assert per_seed.shape == (2,) and per_seed[1] == 0.0
    with pytest.raises(CifarlensError):
        image_sampling_sd(600, 500, 1000)


def test_identical_seeds_leave_only_the_test_set_component():
    # every seed makes the same right/wrong pattern: no seed noise, and the shared part is
    # Var_i(mu_i) / n exactly (mu_i = the pattern's delta)
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 1, 1, 1, 0, 1, 0], dtype=bool)
    r = variance_sources(np.tile(a, (3, 1)), np.tile(b, (3, 1)))
    delta = b.astype(float) - a.astype(float)
    assert r["seed_sd"] == 0.0 and r["independent_sd"] == 0.0
    assert r["test_set_var"] == pytest.approx(np.var(delta, ddof=1) / 8)
    assert r["se_both"] == pytest.approx(math.sqrt(np.var(delta, ddof=1) / 8))
    assert r["image_sampling_sd"] == pytest.approx(image_sampling_sd(2, 2, 8))


def test_independent_errors_split_as_expected_on_average():
    # images with their own chance of being right in each arm, every seed an independent draw
    # (Jordan's independent-errors case): on average seed_var = independent var, and the
    # shared part estimates Var_i(pb_i - pa_i) / n
    rng = np.random.default_rng(1)
    n, s, reps = 400, 5, 300
    pa, pb = rng.beta(2, 1, n), rng.beta(2.2, 1, n)
    seed_var, indep_var, shared = [], [], []
    for _ in range(reps):
        ca, cb = rng.random((s, n)) < pa, rng.random((s, n)) < pb
        r = variance_sources(ca, cb)
        seed_var.append(r["seed_sd"] ** 2)
        indep_var.append(r["independent_sd"] ** 2)
        shared.append(r["test_set_var"])
    truth_indep = np.mean(pa * (1 - pa) + pb * (1 - pb)) / n
    assert np.mean(seed_var) == pytest.approx(truth_indep, rel=0.1)
    assert np.mean(indep_var) == pytest.approx(truth_indep, rel=0.02)
    assert np.mean(shared) == pytest.approx(np.var(pb - pa, ddof=1) / n, rel=0.1)


def test_correlated_errors_show_as_seed_sd_above_the_independent_sd():
    # each seed shifts every image's chance of being right for the variant: seeds differ on the
    # whole distribution, which independent per-image noise cannot explain
    rng = np.random.default_rng(2)
    n, s = 2000, 8
    shift = np.linspace(-0.1, 0.1, s)[:, None]
    ca = rng.random((s, n)) < 0.6
    cb = rng.random((s, n)) < 0.6 + shift
    r = variance_sources(ca, cb)
    assert r["seed_sd"] > 3 * r["independent_sd"]
    with pytest.raises(CifarlensError):
        variance_sources(ca[:1], cb[:1])
    with pytest.raises(CifarlensError):
        variance_sources(ca, cb[:, :10])
