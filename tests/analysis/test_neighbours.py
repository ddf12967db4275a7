"""Cosine neighbours and the class-clustered tests of analysis/neighbours.py."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
import torch

from cifarlens.analysis import cluster_tests as CT
from cifarlens.analysis import neighbours as NB
from cifarlens.training import features as FE

# --- nearest -----------------------------------------------------------------------------------------


def _brute(q: np.ndarray, t: np.ndarray, allowed: np.ndarray, k: int):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ tn.T.astype(np.float64)
    s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def test_nearest_matches_brute_force_over_all_and_within_classes(monkeypatch):
    monkeypatch.setattr(NB, "BLOCK_ENTRIES", 7 * 300)  # several blocks of queries
    rng = np.random.default_rng(3)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    labels = rng.integers(0, 6, 300)
    labels[labels == 5] = 4
    labels[:3] = 5  # class 5 has 3 images: fewer than k
    query = rng.normal(size=(25, 16)).astype(np.float32)
    cls = np.stack([rng.integers(0, 6, 25), rng.integers(0, 6, 25)], axis=1)
    cls[0] = [5, 2]
    got = NB.nearest(query, train, labels, cls, k=8)
    idx, sim = _brute(query, train, np.ones(300, bool), 8)
    np.testing.assert_array_equal(got["all_index"], idx)
    np.testing.assert_allclose(got["all_similarity"], sim, atol=1e-5)
    for i in range(25):
        for j in range(2):
            bi, bs = _brute(query[i:i + 1], train, labels == cls[i, j], 8)
            n = min(8, int((labels == cls[i, j]).sum()))
            np.testing.assert_array_equal(got["class_index"][i, j, :n], bi[0, :n])
            np.testing.assert_allclose(got["class_similarity"][i, j, :n], bs[0, :n], atol=1e-5)
            assert (labels[got["class_index"][i, j, :n]] == cls[i, j]).all()
            assert (got["class_index"][i, j, n:] == -1).all()
            assert np.isnan(got["class_similarity"][i, j, n:]).all()
    assert (got["class_index"][0, 0] >= 0).sum() == 3


def test_float16_features_keep_cosines_and_neighbours_up_to_near_ties():
    rng = np.random.default_rng(4)
    train = np.abs(rng.normal(size=(2000, 64))).astype(np.float32) * 30  # ReLU-like, large
    query = np.abs(rng.normal(size=(50, 64))).astype(np.float32) * 30
    exact = NB.nearest(query, train, np.zeros(2000, int), k=8)
    half = NB.nearest(query.astype(np.float16), train.astype(np.float16), np.zeros(2000, int), k=8)
    s32 = NB._unit(query) @ NB._unit(train).T
    # the float16 cosines are the float32 ones to within the rounding of two unit vectors
    np.testing.assert_allclose(half["all_similarity"], exact["all_similarity"], atol=1.5e-3)
    # every neighbour found in float16 is, in float32, within that tolerance of the true k-th best
    kth = exact["all_similarity"][:, -1:]
    assert (np.take_along_axis(s32, half["all_index"], 1) >= kth - 3e-3).all()


def test_label_share_counts_only_existing_neighbours():
    nl = np.array([[1, 1, 2, -1], [3, 3, 3, 3], [-1, -1, -1, -1]])
    got = NB.label_share(nl, np.array([1, 2, 0]))
    np.testing.assert_allclose(got[:2], [2 / 3, 0.0])
    assert np.isnan(got[2])
    np.testing.assert_allclose(NB.label_share(nl[:2], 3), [0.0, 1.0])


# --- the tests on the neighbours ---------------------------------------------------------------------


def _case(rng: np.random.Generator, planted: float, classes: int = 8, fails: int = 6,
          ok: int = 20, k: int = 8):
    """Failures of each class with a predicted class. Every neighbour of a correctly classified
    image carries its class with probability 0.6, else a uniformly random label; a failure's
    neighbour carries the predicted label with probability `planted`, else is drawn like a
    correct image's (so `planted` = 0 is the null: failures placed like correct images)."""
    f_true = np.repeat(np.arange(classes), fails)
    f_pred = (f_true + rng.integers(1, classes, len(f_true))) % classes
    o_true = np.repeat(np.arange(classes), ok)

    def draw(target: np.ndarray, p: float) -> np.ndarray:
        rand = rng.integers(0, classes, (len(target), k))
        return np.where(rng.random((len(target), k)) < p, target[:, None], rand)

    f_nb = np.where(rng.random((len(f_true), k)) < planted, f_pred[:, None], draw(f_true, 0.6))
    return (f_nb, f_pred, f_true, draw(o_true, 0.6), o_true)


def test_a_planted_cluster_is_supported_and_each_majority_failure_gets_its_sentence():
    fn, fp, ft, on, ot = _case(np.random.default_rng(5), planted=0.8)
    res = NB.neighbour_share(fn, fp, ft, on, ot, resamples=999, seed=1)
    assert res["supported"] and res["p"] < 0.01
    assert res["ci"][0] > 0.4 and res["mean_diff"] > 0.5
    # the reference is each failure's predicted label among ITS true class's correct images
    i = 0
    want = np.mean(NB.label_share(on[ot == ft[i]], fp[i]))
    assert res["reference"][i] == pytest.approx(want)
    assert res["claim"].sum() > 0.8 * len(fp)
    assert not res["claim"][res["share"] <= 0.5].any()


def test_random_neighbours_are_not_supported_and_the_test_holds_its_level():
    res = NB.neighbour_share(*_case(np.random.default_rng(6), planted=0.0), resamples=999)
    assert not res["supported"] and not res["claim"].any()
    ps = [NB.neighbour_share(*_case(np.random.default_rng(100 + s), planted=0.0, classes=5,
                                    fails=3, ok=8), resamples=199, seed=s)["p"]
          for s in range(60)]
    assert np.mean(np.array(ps) < 0.05) <= 0.12  # nominal 5%; 60 draws


def test_too_few_classes_get_no_interval_and_no_claim():
    fn, fp, ft, on, ot = _case(np.random.default_rng(7), planted=1.0, classes=4)
    res = NB.neighbour_share(fn, fp, ft, on, ot, resamples=99)
    assert res["p"] is None and res["ci"] == (None, None) and not res["claim"].any()


def test_stratified_permutation_p_matches_exact_enumeration():
    rng = np.random.default_rng(8)
    m = rng.random((5, 2))  # one stratum: 5 places, 2 items
    obs = m[0, 0] + m[1, 1]
    exact = np.mean([m[a, 0] + m[b, 1] >= obs - 1e-12 for a, b in permutations(range(5), 2)])
    got = CT.permutation_within_strata([m], [2], rng=np.random.default_rng(0), resamples=20000)
    assert got == pytest.approx(exact, abs=0.01)


def test_sign_flip_is_exact_for_few_clusters():
    d = np.array([-1.0, -2.0, -1.5, -0.5, -1.0, -3.0])
    cl = np.array([0, 0, 1, 2, 3, 4])  # 5 clusters, all negative: 2 of 32 patterns as extreme
    assert CT.sign_flip_clusters(d, cl, rng=np.random.default_rng(0)) == pytest.approx(2 / 32)
    balanced = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    assert CT.sign_flip_clusters(balanced, np.arange(6), rng=np.random.default_rng(0)) == 1.0


def test_clustered_interval_resamples_clusters_not_images():
    rng = np.random.default_rng(9)
    lo, hi = CT.clustered_mean_ci(np.full(30, 0.25), np.repeat(np.arange(6), 5), rng=rng)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    # 40 equal-sized clusters whose images are identical: the interval is that of 40 values
    means = rng.normal(size=40)
    lo, hi = CT.clustered_mean_ci(np.repeat(means, 25), np.repeat(np.arange(40), 25),
                                  rng=np.random.default_rng(1), resamples=4000)
    half = 1.96 * means.std(ddof=0) / np.sqrt(40)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_share_change_says_fell_only_when_the_share_fell_across_classes():
    rng = np.random.default_rng(10)
    cl = np.repeat(np.arange(10), 4)
    base = rng.uniform(0.5, 1.0, 40)
    fell = NB.share_change(base, base - rng.uniform(0.2, 0.4, 40), cl, resamples=999)
    assert fell["fell"] and not fell["rose"] and fell["ci"][1] < 0 and fell["p"] < 0.01
    noise = NB.share_change(base, base + rng.normal(0, 0.1, 40), cl, resamples=999)
    assert not noise["fell"] and not noise["rose"]
    few = NB.share_change(base[:8], base[:8] - 0.3, cl[:8], resamples=99)  # 2 classes
    assert few["p"] is None and not few["fell"]


# --- on a trained run --------------------------------------------------------------------------------


def test_on_a_trained_run_features_reproduce_the_saved_logits_and_failures_sit_near_their_pred(
        analysed_run):
    from cifarlens.runs import Run

    run = Run(analysed_run)
    data, model = run.data(), run.model()
    xtr, ytr, _ = run.split_arrays("train", data)
    p = run.require_current("predictions", "test")
    ftr = FE.features(model, xtr, run.norm)
    fte = FE.features(model, data.test_x[p["indices"]], run.norm)
    with torch.no_grad():  # the saved predictions come back through the last Linear
        logits = FE.feature_layer(model).module(torch.from_numpy(fte.astype(np.float32)))
    np.testing.assert_allclose(logits.numpy(), p["logits"], atol=1e-2)
    assert (logits.numpy().argmax(1) == p["pred"]).mean() > 0.99
    got = NB.nearest(fte, ftr, ytr, np.stack([p["pred"], p["labels"]], axis=1))
    nl = ytr[got["all_index"]]
    majority = np.array([np.bincount(r, minlength=data.num_classes).argmax() for r in nl])
    assert (majority == p["pred"]).mean() > 0.6  # the model's neighbours follow its predictions
    assert (ytr[got["class_index"][:, 0]] == p["pred"][:, None]).all()
    wrong = p["pred"] != p["labels"]
    res = NB.neighbour_share(nl[wrong], p["pred"][wrong], p["labels"][wrong], nl[~wrong],
                             p["labels"][~wrong], resamples=999)
    assert res["n_classes"] >= 5 and res["mean_diff"] > 0.1 and res["supported"]
