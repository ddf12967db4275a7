"""metrics.py against independent computations (scikit-learn, scipy, plain loops)."""

from __future__ import annotations

import json
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import softmax as sp_softmax
from sklearn import metrics as skm

from cifarlens.analysis.metrics import (
    _ece_from_bins,
    apply_temperature,
    brier,
    calibration_bins,
    confidences_and_correct,
    confusion_matrix,
    ece,
    fit_temperature,
    macro_f1,
    mce,
    mce_with_count,
    nll,
    per_class_accuracy,
    softmax,
    summarize,
    superclass_report,
    top_confusions,
    topk_accuracy,
)
from cifarlens.errors import CifarlensError
from cifarlens.figures.plots import (
    ClassGroups,
    plot_confidence_hist,
    plot_confusion,
    plot_reliability,
    plot_superclass_confusion,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_case(n: int = 600, c: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2.0
    labels = rng.integers(0, c, n)
    logits[np.arange(n), labels] += 1.5  # better than chance, so calibration bins are spread
    return labels, sp_softmax(logits, axis=1)


# ----------------------------------------------------------------------------- basic metrics


def test_softmax_matches_scipy_and_is_stable() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 7)) * 5
    np.testing.assert_allclose(softmax(z), sp_softmax(z, axis=1), rtol=1e-12)
    huge = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4 + 1.0, -1e4]])
    p = softmax(huge)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])


def test_nll_matches_sklearn_log_loss() -> None:
    labels, probs = random_case()
    expected = skm.log_loss(labels, probs, labels=np.arange(probs.shape[1]))
    assert nll(probs, labels) == pytest.approx(expected, rel=1e-10)


def test_nll_clips_zero_probability_of_true_class() -> None:
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert nll(probs, [1, 0]) == pytest.approx((-math.log(1e-12) + math.log(2)) / 2)


def test_brier_matches_one_hot_formula_and_sklearn() -> None:
    labels, probs = random_case(seed=2)
    c = probs.shape[1]
    onehot = np.eye(c)[labels]
    expected = np.mean(np.sum((probs - onehot) ** 2, axis=1))
    assert brier(probs, labels) == pytest.approx(expected, rel=1e-12)
    assert brier(probs, labels) == pytest.approx(
        skm.brier_score_loss(labels, probs, labels=np.arange(c)), rel=1e-10
    )


@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_matches_sklearn(k: int) -> None:
    labels, probs = random_case(seed=3)
    expected = skm.top_k_accuracy_score(labels, probs, k=k, labels=np.arange(probs.shape[1]))
    assert topk_accuracy(probs, labels, k) == pytest.approx(expected)


def test_topk_edges() -> None:
    labels, probs = random_case(n=40, c=6, seed=4)
    assert topk_accuracy(probs, labels, 6) == 1.0
    assert topk_accuracy(probs, labels, 1) == pytest.approx(
        np.mean(probs.argmax(axis=1) == labels)
    )
    with pytest.raises(CifarlensError):
        topk_accuracy(probs, labels, 0)
    with pytest.raises(CifarlensError):
        topk_accuracy(probs, labels, 7)


def test_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 9, 500)
    preds = rng.integers(0, 9, 500)
    cm = confusion_matrix(labels, preds, 10)  # class 9 never occurs
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, preds, labels=np.arange(10)))
    # rows = true: row 3 counts the samples whose label is 3
    assert cm[3].sum() == np.sum(labels == 3)
    acc = per_class_accuracy(cm)
    assert np.isnan(acc[9])
    np.testing.assert_allclose(acc[:9], [np.mean(preds[labels == i] == i) for i in range(9)])


def test_macro_f1_matches_sklearn_with_absent_and_prediction_only_classes() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 8, 400)  # true classes 0..7
    preds = np.where(rng.random(400) < 0.5, labels, rng.integers(0, 9, 400))  # 8: predicted only
    cm = confusion_matrix(labels, preds, 12)  # 9..11 absent everywhere: excluded
    expected = skm.f1_score(labels, preds, average="macro", zero_division=0)
    assert macro_f1(cm) == pytest.approx(expected, rel=1e-12)
    # Sanity that exclusion matters: averaging over all 12 classes would give a lower number.
    assert macro_f1(cm) > expected * 9 / 12 + 1e-9


def test_macro_f1_zero_for_class_never_right() -> None:
    cm = np.array([[2, 0], [1, 0]])  # class 1 present but never predicted right
    # class 0: P = 2/3, R = 1 -> F1 = 0.8; class 1: F1 = 0
    assert macro_f1(cm) == pytest.approx(0.4)


# ----------------------------------------------------------------------------- calibration


def ref_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> list[list[tuple[float, bool]]]:
    """Per-sample bin assignment written out by hand: bin i is (i/n, (i+1)/n], 0 -> bin 0."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for c, ok in zip(conf.tolist(), correct.tolist(), strict=True):
        if c == 0.0:
            b = 0
        else:
            b = -1
            for i in range(n_bins):
                if i / n_bins < c <= (i + 1) / n_bins:
                    b = i
                    break
            assert b >= 0, c
        members[b].append((c, bool(ok)))
    return members


def ref_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[float, float]:
    total = len(conf)
    ece, mce = 0.0, 0.0
    for m in ref_bins(conf, correct, n_bins):
        if m:
            acc = sum(ok for _, ok in m) / len(m)
            mean_c = sum(c for c, _ in m) / len(m)
            ece += len(m) / total * abs(acc - mean_c)
            mce = max(mce, abs(acc - mean_c))
    return ece, mce


def test_calibration_bins_match_reference_loop_including_edges() -> None:
    rng = np.random.default_rng(7)
    conf = rng.random(1500)
    # exact edges (incl. 0 and 1.0) must follow the (lo, hi] rule
    conf[:16] = np.arange(16) / 15
    conf[16:30] = 1.0
    correct = rng.random(1500) < conf
    b = calibration_bins(conf, correct, 15)
    ref = ref_bins(conf, correct, 15)
    assert b["count"].tolist() == [len(m) for m in ref]
    assert b["count"].sum() == 1500
    assert len(b["count"]) == 15 and len(b["edges"]) == 16
    for i, m in enumerate(ref):
        assert b["confidence"][i] == pytest.approx(np.mean([c for c, _ in m]))
        assert b["accuracy"][i] == pytest.approx(np.mean([ok for _, ok in m]))
    # 2/15 sits on an edge: it belongs to bin 1 = (1/15, 2/15], not bin 2
    assert (2 / 15) in [c for c, _ in ref[1]]


def test_confidence_one_goes_to_last_bin_and_changes_ece() -> None:
    # One wrong prediction at confidence exactly 1.0 plus three right ones at 0.94 (same bin).
    conf = np.array([1.0, 0.94, 0.94, 0.94])
    correct = np.array([False, True, True, True])
    b = calibration_bins(conf, correct, 15)
    assert b["count"][14] == 4 and b["count"][:14].sum() == 0
    # Last bin: mean conf 0.955, accuracy 0.75 -> ECE 0.205. A separate bin for 1.0 (the
    # torchmetrics #3510 behaviour) would give 3/4 * 0.06 + 1/4 * 1.0 = 0.295 instead.
    assert _ece_from_bins(b) == pytest.approx(0.205)
    hidden_bin = 3 / 4 * abs(1 - 0.94) + 1 / 4 * abs(0 - 1.0)
    assert hidden_bin == pytest.approx(0.295)
    # Same through the probs path: a one-hot row gives a top-label confidence of exactly 1.0.
    probs = np.array([[1.0, 0.0, 0.0]] + [[0.94, 0.03, 0.03]] * 3)
    labels = np.array([1, 0, 0, 0])
    assert ece(probs, labels) == pytest.approx(0.205)
    assert mce(probs, labels) == pytest.approx(0.205)


def test_zero_confidence_goes_to_first_bin() -> None:
    b = calibration_bins(np.array([0.0, 0.01]), np.array([False, True]), 15)
    assert b["count"][0] == 2


def test_ece_mce_from_probs_match_reference() -> None:
    labels, probs = random_case(n=2000, c=10, seed=8)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    e, m = ref_ece(conf, correct)
    assert ece(probs, labels) == pytest.approx(e, rel=1e-10)
    assert mce(probs, labels) == pytest.approx(m, rel=1e-10)
    assert 0 < e <= m


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0, 1.0, 0.5, 1 / 3, 14 / 15]) | st.floats(0, 1),
                       st.booleans()), min_size=1, max_size=60)
)
def test_ece_property_matches_reference(pairs: list[tuple[float, bool]]) -> None:
    conf = np.array([c for c, _ in pairs])
    correct = np.array([ok for _, ok in pairs])
    b = calibration_bins(conf, correct)
    assert b["count"].sum() == len(pairs)
    assert b["count"].tolist() == [len(m) for m in ref_bins(conf, correct, 15)]
    e = _ece_from_bins(b)
    assert 0.0 <= e <= 1.0
    assert e == pytest.approx(ref_ece(conf, correct)[0], abs=1e-12)


# ----------------------------------------------------------------------------- temperature


def synthetic_logits(t0: float, n: int = 20000, c: int = 10, seed: int = 9):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 4.0
    p = sp_softmax(z / t0, axis=1)
    u = rng.random(n)[:, None]
    labels = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return z, labels


def test_fit_temperature_recovers_known_temperature() -> None:
    z, labels = synthetic_logits(2.5)
    t = fit_temperature(z, labels)
    assert abs(t - 2.5) / 2.5 < 0.1
    assert fit_temperature(z, labels) == t  # deterministic
    # Independent check: a plain grid search over T lands next to the fitted optimum.
    grid = np.linspace(2.0, 3.0, 41)
    losses = [-np.mean(sp_log_softmax(z / g, axis=1)[np.arange(len(labels)), labels])
              for g in grid]
    assert abs(grid[int(np.argmin(losses))] - t) <= grid[1] - grid[0]
    # Scaling keeps every prediction and lowers the NLL compared with T = 1.
    scaled = apply_temperature(z, t)
    np.testing.assert_array_equal(scaled.argmax(axis=1), z.argmax(axis=1))
    assert nll(scaled, labels) < nll(softmax(z), labels)


def test_fit_temperature_warns_at_bound_on_training_like_data() -> None:
    z, _ = synthetic_logits(1.0, n=500)
    with pytest.warns(RuntimeWarning, match="bound"):
        t = fit_temperature(z, z.argmax(axis=1))  # all right: NLL keeps falling as T -> 0
    assert t == pytest.approx(0.05, rel=1e-3)


def test_apply_temperature_rejects_bad_t() -> None:
    with pytest.raises(CifarlensError):
        apply_temperature(np.zeros((2, 3)), 0.0)
    with pytest.raises(CifarlensError):
        apply_temperature(np.zeros((2, 3)), float("nan"))


# ----------------------------------------------------------------------------- superclasses


def test_superclass_report_on_constructed_example() -> None:
    f2c = np.arange(100) % 20  # class i is in superclass i % 20; mates differ by 20
    labels = np.arange(10)
    preds = np.array([0, 1, 22, 43, 5, 6, 6, 7, 9, 29])
    # errors at 2, 3, 4, 5, 8, 9; within-superclass: 2->22, 3->43, 9->29
    r = superclass_report(labels, preds, f2c, 20)
    assert r["errors"] == 6
    assert r["errors_within_superclass"] == 3
    assert r["within_superclass_share"] == pytest.approx(0.5)
    assert r["coarse_accuracy"] == pytest.approx(0.7)  # 4 right + 3 right superclass
    assert r["chance_share"] == pytest.approx(4 / 99)
    cc = r["coarse_confusion"]
    assert cc.shape == (20, 20) and cc.sum() == 10 and np.trace(cc) == 7
    assert cc[4, 5] == 1 and cc[5, 6] == 1 and cc[8, 9] == 1


def test_superclass_chance_share_with_unequal_groups() -> None:
    r = superclass_report([0, 1], [0, 1], [0, 0, 0, 1, 1], 2)
    assert r["chance_share"] == pytest.approx((2 + 2 + 2 + 1 + 1) / 5 / 4)
    assert r["errors"] == 0 and math.isnan(r["within_superclass_share"])


def test_superclass_binomial_test_against_chance() -> None:
    f2c = np.arange(100) % 20  # 5 classes per superclass: chance 4/99
    # the case: 15 of 336 errors inside the superclass (4.46% vs 4.04%) is chance
    labels = np.zeros(336, dtype=np.int64)
    preds = np.r_[np.full(15, 20), np.full(321, 1)]  # 0 -> 20 shares superclass 0; 0 -> 1 not
    r = superclass_report(labels, preds, f2c, 20)
    assert r["errors"] == 336 and r["errors_within_superclass"] == 15
    assert r["binomial_p"] == pytest.approx(sps.binomtest(15, 336, 4 / 99).pvalue)
    assert r["binomial_p"] > 0.05
    lo, hi = r["share_ci"]
    assert lo < 4 / 99 < hi and lo < 15 / 336 < hi
    # 60 of 336 (17.9%) is far above chance
    preds = np.r_[np.full(60, 20), np.full(276, 1)]
    r = superclass_report(labels, preds, f2c, 20)
    assert r["binomial_p"] < 1e-20 and r["share_ci"][0] > 4 / 99
    # no errors: nothing to test
    r = superclass_report([0, 1], [0, 1], f2c, 20)
    assert r["binomial_p"] is None and r["share_ci"] is None


def test_top_confusions_order_and_ties() -> None:
    cm = np.array([[5, 3, 0, 3],
                   [2, 6, 1, 0],
                   [3, 0, 7, 2],
                   [0, 0, 3, 4]])
    names = ["a", "b", "c", "d"]
    top = top_confusions(cm, names, k=5)
    # count 3: (0,1) (0,3) (2,0) (3,2) -- same true class 0 tie broken by pred; then count 2
    assert [(t["true"], t["pred"]) for t in top] == [(0, 1), (0, 3), (2, 0), (3, 2), (1, 0)]
    assert top[1] == {"true": 0, "pred": 3, "true_name": "a", "pred_name": "d", "count": 3,
                      "share_of_true": pytest.approx(3 / 11)}
    everything = top_confusions(cm, names, k=100)
    assert len(everything) == 7  # only non-zero off-diagonal cells
    assert all(t["true"] != t["pred"] for t in everything)


# ----------------------------------------------------------------------------- summary


def test_summarize_is_json_ready_and_consistent() -> None:
    rng = np.random.default_rng(10)
    n, c = 800, 20
    z = rng.normal(size=(n, c)) * 2
    labels = rng.integers(0, c - 1, n)  # class 19 never occurs -> per-class accuracy None
    z[np.arange(n), labels] += 2
    probs = softmax(z).astype(np.float32)  # float32 probs, as saved by an evaluation
    f2c = np.arange(c) // 5
    names = [f"c{i}" for i in range(c)]
    s = summarize(labels, probs, logits=z, class_names=names, fine_to_coarse=f2c,
                    coarse_names=["w", "x", "y", "z"])
    json.dumps(s, allow_nan=False)  # no NaN, no numpy types

    def plain(o: object) -> None:
        if isinstance(o, dict):
            for v in o.values():
                plain(v)
        elif isinstance(o, list):
            for v in o:
                plain(v)
        else:
            assert o is None or type(o) in (int, float, str, bool), type(o)

    plain(s)
    p64 = probs.astype(np.float64)
    assert s["n"] == n
    assert s["top1"] == pytest.approx(np.mean(p64.argmax(1) == labels))
    assert s["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, p64, k=5,
                                                              labels=np.arange(c)))
    assert s["loss"] == pytest.approx(skm.log_loss(labels, softmax(z), labels=np.arange(c)))
    assert s["ece"] == pytest.approx(ref_ece(p64.max(1), p64.argmax(1) == labels)[0], rel=1e-9)
    assert s["brier"] == pytest.approx(brier(p64, labels))
    assert s["per_class_accuracy"][19] is None
    assert len(s["confusion_matrix"]) == c and sum(map(sum, s["confusion_matrix"])) == n
    assert s["macro_f1"] == pytest.approx(
        skm.f1_score(labels, p64.argmax(1), average="macro", zero_division=0))
    assert len(s["calibration"]["count"]) == 15
    assert s["superclass"]["coarse_names"] == ["w", "x", "y", "z"]
    assert s["superclass"]["chance_share"] == pytest.approx(4 / 19)
    assert np.array(s["superclass"]["coarse_confusion"]).shape == (4, 4)
    assert 0 <= s["top1"] <= s["top5"] <= 1


def test_input_errors_are_user_facing() -> None:
    labels, probs = random_case(n=20, c=5)
    with pytest.raises(CifarlensError, match="softmax|logits"):
        nll(np.log(probs) * 3, labels)  # logits passed as probs
    with pytest.raises(CifarlensError):
        nll(probs, labels[:-1])
    with pytest.raises(CifarlensError):
        confusion_matrix([0, 5], [0, 1], 5)
    with pytest.raises(CifarlensError):
        summarize(labels, probs, class_names=["a", "b"])


# ----------------------------------------------------------------------------- figures


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert plt.imread(path).ndim == 3  # decodes
    assert plt.get_fignums() == []  # save_figure closed it


def test_plot_confusion_grouped(tmp_path) -> None:
    # 40 classes in 8 groups exercises the same code as CIFAR-100's 100 in 20, in a third of
    # the time (rendering 100 x 100 with 240 labels takes ~4 s).
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 40, 3000)
    preds = np.where(rng.random(3000) < 0.5, labels, rng.integers(0, 40, 3000))
    cm = confusion_matrix(labels, preds, 40)
    f2c = rng.permutation(np.repeat(np.arange(8), 5))
    out = tmp_path / "cm.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a missing glyph for the arrow
        plot_confusion(cm, [f"class{i}" for i in range(40)], out,
                       groups=ClassGroups(f2c, [f"super{i}" for i in range(8)]))
    assert_png(out)


def test_plot_superclass_confusion_and_confidence_hist(tmp_path) -> None:
    rng = np.random.default_rng(12)
    plot_superclass_confusion(rng.integers(0, 50, (20, 20)), [f"s{i}" for i in range(20)],
                                tmp_path / "sc.png")
    assert_png(tmp_path / "sc.png")
    conf = rng.random(500)
    plot_confidence_hist(conf, rng.random(500) < conf, tmp_path / "hist.png")
    assert_png(tmp_path / "hist.png")


def test_plot_reliability_single_overlay_and_json_bins(tmp_path) -> None:
    z, labels = synthetic_logits(2.5, n=2000)
    raw = softmax(z)
    bins = calibration_bins(*confidences_and_correct(raw, labels))
    plot_reliability(bins, tmp_path / "one.png", label="baseline", ece=ece(raw, labels))
    assert_png(tmp_path / "one.png")
    # Bins read back from summary JSON (lists, None for empty bins) work too, and overlay.
    js = json.loads(json.dumps(summarize(labels, raw, class_names=list("abcdefghij"))))
    scaled = apply_temperature(z, 2.5)
    series = [("raw", js["calibration"], js["ece"]),
              ("T=2.5", calibration_bins(*confidences_and_correct(scaled, labels)), None)]
    plot_reliability(series, tmp_path / "two.png")
    assert_png(tmp_path / "two.png")


def test_mce_comes_with_the_size_of_its_bin() -> None:
    # 20 images at confidence 0.5, half right (gap 0); one image at 0.95, wrong (gap 0.95)
    probs = np.array([[0.5, 0.5, 0.0]] * 20 + [[0.95, 0.05, 0.0]])
    labels = np.array([0, 1] * 10 + [1])
    m, k = mce_with_count(probs, labels)
    assert m == pytest.approx(0.95) and k == 1
    assert mce(probs, labels) == m
    s = summarize(labels, probs, class_names=["a", "b", "c"])
    assert s["mce"] == pytest.approx(0.95) and s["mce_count"] == 1
