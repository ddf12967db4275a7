"""The `--seeds auto` stopping rule simulated as implemented (sequential_decisions is the code
sequential_rule runs) on synthetic paired differences: its false-positive rate under the null,
its equivalence error at the margin, and its power, with the plain repeated t-test as the
control that the simulation would catch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cifarlens.analysis.power import minimal_detectable_effect
from cifarlens.analysis.sequential import (
    boundaries,
    sequential_decisions,
    sequential_rule,
    spend,
    wave_looks,
)
from cifarlens.errors import CifarlensError

ALPHA = 0.05
PATHS = 40_000
TOL = 4 * math.sqrt(ALPHA * (1 - ALPHA) / PATHS)  # Monte Carlo tolerance, ~0.0044


def _paths(mean: float, sd: float, seed: int, n: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, size=(PATHS, n))


def test_wave_schedule_and_spending():
    assert wave_looks(1) == (3, 4, 5, 6, 7, 8, 9, 10)
    assert wave_looks(2) == (4, 6, 8, 10)
    assert wave_looks(4) == (4, 8, 10)
    assert wave_looks(16) == (10,)
    assert wave_looks(3, max_seeds=5, first=2) == (3, 5)
    for kind in ("obf", "pocock"):
        assert spend(1.0, ALPHA, kind) == pytest.approx(ALPHA)
        steps = [spend(t, ALPHA, kind) for t in np.linspace(0.1, 1, 10)]
        assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
    assert spend(0.3, ALPHA, "obf") < spend(0.3, ALPHA, "pocock")
    with pytest.raises(CifarlensError):
        spend(0.5, ALPHA, "haybittle")
    # a single look is the fixed-sample t-test
    b = boundaries((10,), ALPHA, "obf")
    assert boundaries([10]) is b  # any sequence of looks; computed once per design
    assert b.two_sided[0] == pytest.approx(sps.t.ppf(0.975, 9), rel=0.01)
    assert b.one_sided[0] == pytest.approx(sps.t.ppf(0.95, 9), rel=0.01)


@pytest.mark.parametrize("looks,spending", [((3, 4, 5, 6, 7, 8, 9, 10), "obf"),
                                            ((3, 4, 5, 6, 7, 8, 9, 10), "pocock"),
                                            ((4, 8, 10), "obf")])
def test_false_positive_rate_stays_at_alpha_despite_the_looks(looks, spending):
    # scale-free: the SD of the differences is arbitrary
    words, used = sequential_decisions(_paths(0.0, 0.013, seed=len(looks)), looks,
                                       margin=0.01, alpha=ALPHA, spending=spending)
    fp = float(np.mean(np.isin(words, ("helped", "hurt"))))
    assert fp <= ALPHA + TOL, fp
    assert fp >= ALPHA - TOL, fp  # and it spends its alpha: not needlessly conservative
    assert set(np.unique(words)) <= {"helped", "hurt", "equivalent", "not decided"}
    assert used.max() <= looks[-1] and used.min() >= looks[0]


def test_the_simulation_catches_a_rule_that_ignores_the_looks():
    d = _paths(0.0, 1.0, seed=7)
    rejected = np.zeros(PATHS, dtype=bool)
    for n in wave_looks(1):
        rejected |= sps.ttest_1samp(d[:, :n], 0.0, axis=1).pvalue < ALPHA
    assert rejected.mean() > 2 * ALPHA  # ~0.17: what the boundaries prevent


def test_boundaries_spend_alpha_on_fresh_null_paths():
    # the calibration as such, on paths it was not computed from: each set of boundaries
    # crosses with probability alpha under the null (two-sided |T|, and one side of the TOST)
    looks = wave_looks(1)
    b = boundaries(looks, ALPHA, "obf")
    d = _paths(0.0, 1.0, seed=12)
    t = np.stack([d[:, :n].mean(1) / (d[:, :n].std(1, ddof=1) / math.sqrt(n)) for n in looks], 1)
    two = float(np.mean(np.any(np.abs(t) >= np.asarray(b.two_sided), axis=1)))
    one = float(np.mean(np.any(t >= np.asarray(b.one_sided), axis=1)))
    assert abs(two - ALPHA) <= TOL and abs(one - ALPHA) <= TOL, (two, one)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("sd", [0.0005, 0.005, 0.013])
def test_equivalence_error_at_the_margin_stays_at_alpha(sign, sd):
    # a true mean exactly at the margin: "equivalent" is a false claim there
    margin = 0.01
    words, _ = sequential_decisions(_paths(sign * margin, sd, seed=11), wave_looks(1),
                                    margin=margin, alpha=ALPHA)
    rate = float(np.mean(words == "equivalent"))
    assert rate <= ALPHA + TOL, rate


def test_power_under_an_effect_close_to_the_fixed_design():
    sd = 0.013
    effect = minimal_detectable_effect(sd, 10)  # the fixed 10-seed test has 80% power here
    words, used = sequential_decisions(_paths(effect, sd, seed=3), wave_looks(1), margin=None,
                                       alpha=ALPHA)
    power = float(np.mean(words == "helped"))
    assert 0.70 <= power <= 0.80 + TOL, power  # measured 0.74: the cost of eight looks
    assert float(np.mean(words == "hurt")) < 0.001
    assert used.mean() < 9.0  # and it stops early when it can
    # a large effect (the seed report's +6.63 points at SD 0.5) stops by the third look (5
    # seeds), mostly at the second: the first look's O'Brien-Fleming boundary is |t| > 49
    big, n_big = sequential_decisions(_paths(0.0663, 0.005, seed=4), wave_looks(1), None, ALPHA)
    assert np.all(big == "helped") and n_big.max() <= 5 and np.mean(n_big == 4) > 0.7
    # a null change with a margin of 2 SDs stops "equivalent" early most of the time
    eq, n_eq = sequential_decisions(_paths(0.0, 0.005, seed=5), wave_looks(1), 0.01, ALPHA)
    assert np.mean(eq == "equivalent") > 0.95 and n_eq.mean() < 7


def test_single_path_rule_agrees_with_the_vectorised_rule():
    looks = wave_looks(2)
    d = _paths(0.004, 0.006, seed=9)[:300]
    words, used = sequential_decisions(d, looks, margin=0.01, alpha=ALPHA)
    for row, w, n in zip(d, words, used, strict=True):
        look = sequential_rule(row[:n], looks, margin=0.01)
        assert (look.decision, look.n) == (w, n)
        assert look.stop
        if look.decision in ("helped", "hurt"):  # the repeated interval agrees with the verdict
            assert look.lo > 0 or look.hi < 0
        if look.decision == "equivalent":
            assert -0.01 < look.eq_lo and look.eq_hi < 0.01
        # asking again with more seeds than needed returns the stopping look's verdict
        assert sequential_rule(row, looks, margin=0.01).n == n


def test_single_path_continue_and_refusals():
    looks = wave_looks(1)
    first = sequential_rule([0.01, -0.01, 0.02], looks, margin=0.01)
    assert first.decision == "continue" and not first.stop and first.look == 1
    assert math.isinf(first.boundary) is False and first.lo < 0 < first.hi
    with pytest.raises(CifarlensError):
        sequential_rule([0.01, 0.02], looks)  # 2 seeds is not a planned look
    with pytest.raises(CifarlensError):
        sequential_rule([0.01, 0.02, 0.03], (3, 3))
    last = sequential_rule(np.array([1, -1, 2, -2, 1, -1, 2, -2, 1, -1]) * 0.01, looks)
    assert last.decision == "no detectable difference" and last.n == 10
