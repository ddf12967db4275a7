"""Power, equivalence, the verdict rule and P(improvement), against simulation, textbook values
and constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from cifarlens.analysis.power import (
    DECISIONS,
    decide,
    equivalence_test,
    minimal_detectable_effect,
    power_paired_t,
    prob_improvement,
    seeds_needed,
)
from cifarlens.analysis.stats import holm, paired_seed_test
from cifarlens.errors import CifarlensError


def _reject_rate(effect: float, sd: float, n: int, paths: int, seed: int) -> float:
    """The two-sided 5% paired t-test as scipy runs it, on simulated per-seed differences."""
    d = np.random.default_rng(seed).normal(effect, sd, size=(paths, n))
    return float(np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_mde_is_detected_with_80_percent_power_in_simulation(n):
    sd, paths = 0.013, 40_000
    mde = minimal_detectable_effect(sd, n)
    rate = _reject_rate(mde, sd, n, paths, seed=n)
    se = math.sqrt(0.8 * 0.2 / paths)
    assert abs(rate - 0.8) < 4 * se, (n, mde, rate)
    # and a change of a third of it is detected far less often
    assert _reject_rate(mde / 3, sd, n, paths, seed=100 + n) < 0.5


def test_power_textbook_values_and_the_normal_limit():
    # Cohen / G*Power, one-sample (paired) t-test, two-sided 5%, 80% power: d = 0.5 needs 34
    # (actual power 0.8077775), d = 0.8 needs 15 (0.8213105).
    assert seeds_needed(1.0, 0.5) == 34
    assert power_paired_t(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert power_paired_t(0.5, 1.0, 33) < 0.8
    assert seeds_needed(1.0, 0.8) == 15
    assert power_paired_t(0.8, 1.0, 15) == pytest.approx(0.8213105, abs=1e-6)
    # with many seeds the t-test is the z-test: MDE * sqrt(n) / sd -> z_0.975 + z_0.8
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert minimal_detectable_effect(1.0, 100_000) * math.sqrt(100_000) == pytest.approx(z, abs=1e-3)
    # at level alpha, power at effect 0 is alpha
    assert power_paired_t(0.0, 1.0, 3) == pytest.approx(0.05, abs=1e-12)


def test_mde_and_seeds_needed_properties():
    assert minimal_detectable_effect(2.0, 5) == pytest.approx(2 * minimal_detectable_effect(1.0, 5))
    mdes = [minimal_detectable_effect(1.0, n) for n in range(2, 12)]
    assert all(b < a for a, b in zip(mdes, mdes[1:], strict=False))
    for bad in (None, 0.0, -1.0, float("nan")):
        assert minimal_detectable_effect(bad, 3) is None
        assert seeds_needed(bad, 0.01) is None
    assert minimal_detectable_effect(1.0, 1) is None
    for sd, eff in ((0.005, 0.01), (0.02, 0.01), (0.013, 0.004)):
        k = seeds_needed(sd, eff)
        assert power_paired_t(eff, sd, k) >= 0.8 > power_paired_t(eff, sd, k - 1)
        # the MDE at k seeds is at most the effect, at k - 1 seeds above it
        assert minimal_detectable_effect(sd, k) <= eff < minimal_detectable_effect(sd, k - 1)
    assert seeds_needed(1.0, 0.01, max_seeds=50) is None
    with pytest.raises(CifarlensError):
        seeds_needed(1.0, 0.0)
    with pytest.raises(CifarlensError):
        minimal_detectable_effect(1.0, 3, power=0.01)


def _diffs_with_tost_halfwidth(half: float, n: int = 3) -> np.ndarray:
    """Differences centred on 0 whose 90% t interval is exactly +/-half."""
    base = np.linspace(-1, 1, n)
    se1 = np.std(base, ddof=1) / math.sqrt(n)
    return base * half / (sps.t.ppf(0.95, n - 1) * se1)


def test_tost_constructed_cases():
    narrow = _diffs_with_tost_halfwidth(0.003)  # +/-0.3 points
    eq = equivalence_test(narrow, 0.01)
    assert eq.equivalent and eq.lo == pytest.approx(-0.003) and eq.hi == pytest.approx(0.003)
    se = np.std(narrow, ddof=1) / math.sqrt(3)
    assert eq.p_lower == pytest.approx(sps.t.sf(0.01 / se, 2))  # mean 0: both sides equal
    assert eq.p_upper == pytest.approx(sps.t.cdf(-0.01 / se, 2))
    assert eq.level == pytest.approx(0.9)
    wide = _diffs_with_tost_halfwidth(0.10)  # +/-10 points
    assert not equivalence_test(wide, 0.01).equivalent
    assert decide(narrow, margin=0.01).decision == "equivalent"
    assert decide(wide, margin=0.01).decision == "not decided"
    assert decide(wide).decision == "no detectable difference"
    # a shifted interval: inside +/-1 only when the shift leaves room
    assert equivalence_test(narrow + 0.006, 0.01).equivalent
    assert not equivalence_test(narrow + 0.008, 0.01).equivalent
    assert not equivalence_test([0.001], 0.01).equivalent  # one seed: no test
    with pytest.raises(CifarlensError):
        equivalence_test(narrow, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.1, 0.1), min_size=2, max_size=8), st.floats(0.001, 0.05))
def test_tost_p_agrees_with_its_interval(diffs, margin):
    eq = equivalence_test(diffs, margin)
    if eq.p_value is None:
        return
    inside = -margin < eq.lo and eq.hi < margin
    if abs(eq.p_value - 0.05) > 1e-9:
        assert eq.equivalent == inside


def test_the_issues_three_seed_smoke_study_is_not_decided_and_says_what_it_could_detect():
    d = np.array([-5.5, -8.0, -2.5]) / 100
    dec = decide(d, margin=0.01)
    assert dec.decision == "not decided"
    assert (round(dec.lo * 100, 1), round(dec.hi * 100, 1)) == (-12.2, 1.5)  # the issue's CI
    ref = paired_seed_test(np.zeros(3), d)
    assert (dec.lo, dec.hi, dec.p_value) == pytest.approx((ref["lo"], ref["hi"], ref["p_value"]))
    assert power_paired_t(dec.mde, dec.sd_diff, 3) == pytest.approx(0.8)
    assert dec.mde > 0.05  # it could not have detected a 5-point change
    k = dec.seeds_for_detect
    assert power_paired_t(0.01, dec.sd_diff, k) >= 0.8 > power_paired_t(0.01, dec.sd_diff, k - 1)


def test_decide_every_outcome_on_constructed_differences():
    up = np.array([0.031, 0.029, 0.030, 0.032])
    assert decide(up, margin=0.01).decision == "helped"
    assert decide(-up, margin=0.01).decision == "hurt"
    # significant but smaller than the margin: still helped, and equivalence says "small"
    tiny = np.array([0.0021, 0.0019, 0.0020, 0.0022])
    d = decide(tiny, margin=0.01)
    assert d.decision == "helped" and d.equivalence.equivalent
    assert decide([0.02], margin=0.01).decision == "not tested"
    assert decide([0.02, 0.02, 0.02]).decision == "not tested"
    assert set(DECISIONS) >= {decide(x, margin=m).decision for x, m in
                              ((up, 0.01), (tiny, 0.01), ([0.02], None))}
    # a mapping (summary.json's seed block) gives the same decision as the differences
    sm = {"n": 4, "mean_diff": float(up.mean()), "std_diff": float(np.std(up, ddof=1))}
    assert decide(sm, margin=0.01) == decide(up, margin=0.01)


def test_holm_adjusted_p_decides_like_the_ablation_table():
    # the issue's case: p = 0.03 alone, 0.06 after Holm over two changes; the headline must
    # not say "hurt" where the ablation table does not
    d = np.array([-0.014, -0.020, -0.026])
    alone = decide(d, margin=0.005)
    assert 0.025 < alone.p_value < 0.05 and alone.decision == "hurt"
    p_holm = holm([alone.p_value, 0.5])[0]
    assert p_holm == pytest.approx(2 * alone.p_value)
    adjusted = decide(d, margin=0.005, p_adjusted=p_holm)
    assert adjusted.decision == "not decided" and "adjusted" in adjusted.reason
    assert adjusted.p_value == alone.p_value and adjusted.p_adjusted == p_holm
    # without a margin the same case reads as the table's "no detectable difference"
    assert decide(d, p_adjusted=p_holm).decision == "no detectable difference"


def test_prob_improvement_known_answers():
    a = np.array([0.60, 0.61, 0.62, 0.63])
    b = a + np.array([0.01, 0.02, 0.0, -0.01])
    r = prob_improvement(a, b)
    assert r["p"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert r["lo"] <= r["p"] <= r["hi"]
    assert prob_improvement(a, b) == r  # seeded: the same interval every time
    # all pairs: rliable's Mann-Whitney U / n^2
    u = sps.mannwhitneyu(b, a, alternative="greater").statistic
    assert prob_improvement(a, b, paired=False)["p"] == pytest.approx(u / 16)
    # every seed better: P = 1 and every resample agrees
    allw = prob_improvement(a, a + 0.01)
    assert (allw["p"], allw["lo"], allw["hi"]) == (1.0, 1.0, 1.0)
    # two seeds, one win, one loss: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4,
    # so the central 40% interval is exactly [1/2, 1/2]
    two = prob_improvement([0.5, 0.5], [0.6, 0.4], level=0.4, n_boot=20_000)
    assert (two["p"], two["lo"], two["hi"]) == (0.5, 0.5, 0.5)
    one = prob_improvement([0.5], [0.6])
    assert one["p"] == 1.0 and one["lo"] is None
    with pytest.raises(CifarlensError):
        prob_improvement([0.5, 0.6], [0.5])
