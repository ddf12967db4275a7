"""stats.py against independent computations (scipy.stats, brute force, hand formulas)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from cifarlens.analysis.metrics import confusion_matrix
from cifarlens.analysis.stats import (
    accuracy_difference_ci,
    confusion_difference,
    mcnemar_exact,
    paired_mean_diff_ci,
    paired_seed_test,
    per_class_changes,
)
from cifarlens.errors import CifarlensError
from cifarlens.figures.plots import ClassGroups, plot_confusion_difference, plot_per_class_changes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_pair(both_right: int, both_wrong: int, a_only: int, b_only: int, seed: int = 0):
    """Shuffled per-image correctness of models a and b with the given outcome counts."""
    a = np.array([1] * both_right + [0] * both_wrong + [1] * a_only + [0] * b_only, bool)
    b = np.array([1] * both_right + [0] * both_wrong + [0] * a_only + [1] * b_only, bool)
    perm = np.random.default_rng(seed).permutation(a.size)
    return a[perm], b[perm]


def brute_force_p(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


# ----------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize("b,c", [(0, 0), (1, 9), (9, 1), (5, 5), (0, 7), (12, 30), (3, 4)])
def test_mcnemar_counts_and_p_match_independent_computations(b: int, c: int) -> None:
    a_ok, b_ok = make_pair(40, 17, b, c, seed=b * 100 + c)
    r = mcnemar_exact(a_ok, b_ok)
    assert (r["n"], r["both_right"], r["both_wrong"], r["a_only"], r["b_only"]) == (
        57 + b + c, 40, 17, b, c)
    assert r["statistic"] == min(b, c)
    assert r["p_value"] == pytest.approx(brute_force_p(b, c), rel=1e-12)
    if b + c > 0:
        assert r["p_value"] == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-10)
    else:
        assert r["p_value"] == 1.0


def test_mcnemar_known_value_and_large_counts() -> None:
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(*make_pair(0, 0, 1, 9))["p_value"] == pytest.approx(22 / 1024)
    a_ok, b_ok = make_pair(6000, 1500, 1200, 1300)
    r = mcnemar_exact(a_ok, b_ok)
    assert r["p_value"] == pytest.approx(sps.binomtest(1200, 2500, 0.5).pvalue, rel=1e-9)


def test_mcnemar_rejects_unpaired_input() -> None:
    with pytest.raises(CifarlensError, match="same test images"):
        mcnemar_exact(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(CifarlensError):
        mcnemar_exact([], [])


# ----------------------------------------------------------------------------- accuracy CI


def test_wald_ci_matches_hand_computation() -> None:
    # n = 100, a_only b = 10, b_only c = 20: diff = 0.1, se = sqrt(10 + 20 - 10^2/100) / 100
    a_ok, b_ok = make_pair(60, 10, 10, 20)
    r = accuracy_difference_ci(a_ok, b_ok)
    se = math.sqrt(29) / 100
    assert r["diff"] == pytest.approx(0.1)
    assert r["se"] == pytest.approx(se)
    assert r["lo"] == pytest.approx(0.1 - 1.959963984540054 * se)
    assert r["hi"] == pytest.approx(0.1 + 1.959963984540054 * se)
    assert r["method"] == "paired_wald"
    assert (r["acc_a"], r["acc_b"]) == (pytest.approx(0.7), pytest.approx(0.8))
    # Pairing matters: the unpaired se is larger here because the models mostly agree.
    unpaired = math.sqrt(0.7 * 0.3 / 100 + 0.8 * 0.2 / 100)
    assert se < unpaired
    r90 = accuracy_difference_ci(a_ok, b_ok, level=0.90)
    assert r90["hi"] - r90["lo"] == pytest.approx(2 * 1.6448536269514722 * se)


def test_ci_no_disagreement_is_degenerate() -> None:
    a_ok, b_ok = make_pair(30, 10, 0, 0)
    r = accuracy_difference_ci(a_ok, b_ok)
    assert (r["diff"], r["lo"], r["hi"], r["se"]) == (0.0, 0.0, 0.0, 0.0)


def test_bootstrap_ci_agrees_with_wald_on_large_case() -> None:
    a_ok, b_ok = make_pair(5500, 2000, 1100, 1400, seed=3)  # n = 10000
    wald = accuracy_difference_ci(a_ok, b_ok)
    boot = accuracy_difference_ci(a_ok, b_ok, method="bootstrap", n_boot=4000, seed=1)
    assert boot["method"] == "paired_bootstrap_percentile"
    assert boot["diff"] == wald["diff"] == pytest.approx(0.03)
    assert boot["lo"] < wald["diff"] < boot["hi"]
    ratio = (boot["hi"] - boot["lo"]) / (wald["hi"] - wald["lo"])
    assert 0.85 < ratio < 1.15
    assert boot["se"] == pytest.approx(wald["se"], rel=0.1)
    again = accuracy_difference_ci(a_ok, b_ok, method="bootstrap", n_boot=4000, seed=1)
    assert again == boot  # seeded


def test_bootstrap_matches_resampling_images_directly() -> None:
    # The multinomial shortcut must behave like resampling the images themselves.
    a_ok, b_ok = make_pair(300, 80, 40, 60, seed=4)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, a_ok.size, (3000, a_ok.size))
    direct = b_ok[idx].mean(axis=1) - a_ok[idx].mean(axis=1)
    boot = accuracy_difference_ci(a_ok, b_ok, method="bootstrap", n_boot=3000, seed=0)
    lo, hi = np.quantile(direct, [0.025, 0.975])
    assert boot["lo"] == pytest.approx(lo, abs=0.006)
    assert boot["hi"] == pytest.approx(hi, abs=0.006)


def test_ci_rejects_bad_arguments() -> None:
    a_ok, b_ok = make_pair(5, 5, 1, 1)
    with pytest.raises(CifarlensError):
        accuracy_difference_ci(a_ok, b_ok, method="exact")  # type: ignore[arg-type]
    with pytest.raises(CifarlensError):
        accuracy_difference_ci(a_ok, b_ok, level=1.5)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=120))
def test_properties_symmetry_and_ranges(pairs: list[tuple[bool, bool]]) -> None:
    a = np.array([x for x, _ in pairs], bool)
    b = np.array([y for _, y in pairs], bool)
    ab, ba = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert 0.0 <= ab["p_value"] <= 1.0
    assert ab["p_value"] == ba["p_value"]
    assert (ab["a_only"], ab["b_only"]) == (ba["b_only"], ba["a_only"])
    assert ab["p_value"] == pytest.approx(brute_force_p(ab["a_only"], ab["b_only"]), abs=1e-12)
    for method in ("wald", "bootstrap"):
        cab = accuracy_difference_ci(a, b, method=method, n_boot=200)
        cba = accuracy_difference_ci(b, a, method=method, n_boot=200)
        assert cab["diff"] == pytest.approx(-cba["diff"])
        assert cab["diff"] == pytest.approx(b.mean() - a.mean())
        assert -1.0 <= cab["lo"] <= cab["hi"] <= 1.0
        if method == "wald":
            assert cab["lo"] == pytest.approx(-cba["hi"])
            assert cab["lo"] <= cab["diff"] <= cab["hi"]


# ----------------------------------------------------------------------------- seeds


def test_paired_seed_test_matches_hand_formula() -> None:
    acc_a = [0.60, 0.62, 0.61, 0.63]
    acc_b = [0.63, 0.64, 0.65, 0.64]
    d = [0.03, 0.02, 0.04, 0.01]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    t = mean / (sd / math.sqrt(4))
    half = sps.t.ppf(0.975, 3) * sd / math.sqrt(4)
    r = paired_seed_test(acc_a, acc_b)
    assert r["n_seeds"] == 4 and r["df"] == 3
    assert r["mean_diff"] == pytest.approx(0.025)
    assert r["std_diff"] == pytest.approx(sd)
    assert r["t"] == pytest.approx(t)
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), 3))
    assert (r["lo"], r["hi"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert r["mean_a"] == pytest.approx(0.615) and r["mean_b"] == pytest.approx(0.64)
    assert r["std_a"] == pytest.approx(np.std(acc_a, ddof=1))
    assert r["note"] is None
    flipped = paired_seed_test(acc_b, acc_a)
    assert flipped["p_value"] == pytest.approx(r["p_value"])
    assert flipped["mean_diff"] == pytest.approx(-r["mean_diff"])


def test_paired_seed_test_single_seed_has_no_test() -> None:
    r = paired_seed_test([0.61], [0.64])
    assert r["n_seeds"] == 1
    assert r["mean_diff"] == pytest.approx(0.03)
    assert r["p_value"] is None and r["lo"] is None and r["std_a"] is None
    assert "seed" in r["note"]


def test_paired_seed_test_two_seeds_and_constant_difference() -> None:
    r = paired_seed_test([0.60, 0.62], [0.61, 0.66])
    assert r["df"] == 1 and 0 < r["p_value"] <= 1 and r["note"]
    const = paired_seed_test([0.5, 0.6, 0.7], [0.55, 0.65, 0.75])
    assert const["p_value"] is None and "variance" in const["note"]
    with pytest.raises(CifarlensError):
        paired_seed_test([0.5, 0.6], [0.5])


# ----------------------------------------------------------------------------- per class


def two_cms():
    labels = np.repeat(np.arange(5), 10)  # 10 images per class
    pa = labels.copy()
    pb = labels.copy()
    pa[[0, 1, 2]] = 1  # class 0: a 7/10
    pb[[0]] = 1  # class 0: b 9/10 -> +0.2
    pb[[10, 11, 12, 13]] = 2  # class 1: a 10/10, b 6/10 -> -0.4
    pa[[20]] = 0  # class 2: a 9/10, b 10/10 -> +0.1
    pa[[30]] = 0  # class 3: a 9/10, b 10/10 -> +0.1 (tie with class 2)
    pb[[40]] = 3  # class 4: -0.1
    return confusion_matrix(labels, pa, 6), confusion_matrix(labels, pb, 6)  # class 5: no images


def test_per_class_changes_sorted_with_ties() -> None:
    cm_a, cm_b = two_cms()
    names = ["a", "b", "c", "d", "e", "f"]
    r = per_class_changes(cm_a, cm_b, names, k=10)
    assert [x["class"] for x in r["improved"]] == [0, 2, 3]
    assert [x["class"] for x in r["worsened"]] == [1, 4]
    assert r["improved"][0] == {"class": 0, "name": "a", "n": 10, "acc_a": 0.7, "acc_b": 0.9,
                                "delta": pytest.approx(0.2)}
    assert r["worsened"][0]["delta"] == pytest.approx(-0.4)
    assert (r["n_improved"], r["n_worsened"], r["n_unchanged"]) == (3, 2, 0)  # class 5 skipped
    assert [x["class"] for x in per_class_changes(cm_a, cm_b, names, k=1)["improved"]] == [0]


def test_confusion_difference_and_same_test_set_check() -> None:
    cm_a, cm_b = two_cms()
    d = confusion_difference(cm_a, cm_b)
    np.testing.assert_array_equal(d, cm_b - cm_a)
    assert d.sum() == 0 and d[0, 0] == 2 and d[1, 1] == -4
    other = cm_b.copy()
    other[0, 0] += 1  # one more image of class 0: not the same test set
    with pytest.raises(CifarlensError, match="same test images"):
        confusion_difference(cm_a, other)


# ----------------------------------------------------------------------------- figures


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert plt.imread(path).ndim == 3
    assert plt.get_fignums() == []


def test_comparison_figures_are_written(tmp_path) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 40, 2000)
    pa = np.where(rng.random(2000) < 0.55, labels, rng.integers(0, 40, 2000))
    pb = np.where(rng.random(2000) < 0.60, labels, rng.integers(0, 40, 2000))
    cm_a, cm_b = confusion_matrix(labels, pa, 40), confusion_matrix(labels, pb, 40)
    names = [f"class{i}" for i in range(40)]
    plot_confusion_difference(cm_a, cm_b, names, tmp_path / "diff.png",
                                groups=ClassGroups(np.arange(40) % 8,
                                                   [f"g{i}" for i in range(8)]))
    assert_png(tmp_path / "diff.png")
    plot_per_class_changes(cm_a, cm_b, names, tmp_path / "changes.png", k=8)
    assert_png(tmp_path / "changes.png")


def test_paired_mean_diff_ci_keeps_the_pairing_and_covers_the_truth():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)  # large image-to-image spread, shared by both methods
    x = base + 0.02 + rng.normal(0, 0.01, 200)
    r = paired_mean_diff_ci(x, base)
    assert r["diff"] == pytest.approx(np.mean(x - base))
    assert 0 < r["lo"] < 0.02 < r["hi"] < 0.03  # paired: the shared spread cancels
    # unpaired, the same shift would be buried in the spread: the pairing is what makes it tight
    assert r["hi"] - r["lo"] < 0.01
    same = paired_mean_diff_ci(base, base)
    assert same["diff"] == 0 and same["lo"] is None
    few = paired_mean_diff_ci([1.0, 2.0], [0.0, 0.0])
    assert few["diff"] == 1.5 and few["lo"] is None
    with pytest.raises(CifarlensError):
        paired_mean_diff_ci([1.0, 2.0], [1.0])


def test_paired_mean_diff_ci_coverage():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(100):
        d = rng.normal(0.1, 0.5, 60)
        r = paired_mean_diff_ci(d, np.zeros(60), n_boot=1000, seed=int(rng.integers(1 << 30)))
        hits += r["lo"] <= 0.1 <= r["hi"]
    assert 88 <= hits <= 100  # nominal 95%
