"""The training images a model puts a test image among: cosine neighbours of features, and
the tests that say whether failures sit among their predicted class.

Arrays in and arrays out (as cleanlab does), kept apart from files and figures; the features
come from `training.features` (a hooked forward pass of the model):

  nearest                    exact cosine top-k over the training features: over all classes,
                             and within given classes per query (the predicted and the true one)
  neighbour_share,           the share of a failure's neighbours that carry its predicted label
  share_change               against correctly classified images of its true class, and for the
                             change: the same image under the baseline's and the variant's model

Neighbours are images the model represents alike, not a cause (compare captum's TracIn, which
estimates influence from gradients; FiftyOne's similarity search, which shows neighbours without
a test). The statistics are in `cluster_tests.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cifarlens.analysis.cluster_tests import (
    clustered_mean_ci,
    permutation_within_strata,
    sign_flip_clusters,
)
from cifarlens.errors import CifarlensError

# Cosine scores are computed in blocks of at most this many entries (64 MiB of float32): 40,000
# training images x 419 queries per block.
BLOCK_ENTRIES = 1 << 24


# --- neighbours ------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 in float32; an all-zero row stays zero (similarity 0 to all)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float32).tiny)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k highest scores' columns and values, highest first (ties: lower column
    first); fewer than k columns are padded with -1 and nan. torch.topk, not np.argpartition:
    10x faster on a 419 x 40,000 block and no full-size index array (measured on this CPU)."""
    rows, cols = scores.shape
    idx = np.full((rows, k), -1, dtype=np.int64)
    val = np.full((rows, k), np.nan, dtype=np.float32)
    m = min(k, cols)
    if m == 0 or rows == 0:
        return idx, val
    top = torch.topk(torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), m, dim=1)
    got, part = top.values.numpy(), top.indices.numpy()
    order = np.lexsort((part, -got), axis=1)
    idx[:, :m] = np.take_along_axis(part, order, axis=1)
    val[:, :m] = np.take_along_axis(got, order, axis=1)
    return idx, val


def nearest(query_feats: np.ndarray, train_feats: np.ndarray, train_labels: np.ndarray,
            classes_per_query: np.ndarray | None = None, k: int = 8) -> dict[str, np.ndarray]:
    """Exact cosine nearest neighbours among the training features, by blocked matrix products.

    Returns positions into `train_feats` (-1 where fewer than k exist) and cosine similarities:
    `all_index`, `all_similarity` (Q, k) over every class, and with `classes_per_query` (Q, C)
    class ids (e.g. columns pred, true) `class_index`, `class_similarity` (Q, C, k): the k most
    similar training images of that class. Memory: one (block, N_train) float32 score matrix
    (at most 64 MiB) plus the unit-length float32 copy of the training features.
    """
    if k < 1:
        raise CifarlensError(f"k must be at least 1, got {k}")
    q, t = _unit(query_feats), _unit(train_feats)
    labels = np.asarray(train_labels, dtype=np.int64)
    if q.shape[1:] != t.shape[1:] or len(labels) != len(t):
        raise CifarlensError(f"features do not match: queries {q.shape}, training {t.shape}, "
                             f"{len(labels)} labels")
    block = max(1, BLOCK_ENTRIES // max(len(t), 1))
    out: dict[str, np.ndarray] = {}
    parts = [_top_k(q[i:i + block] @ t.T, k) for i in range(0, len(q), block)]
    out["all_index"] = np.concatenate([p[0] for p in parts]) if parts else \
        np.empty((0, k), dtype=np.int64)
    out["all_similarity"] = np.concatenate([p[1] for p in parts]) if parts else \
        np.empty((0, k), dtype=np.float32)
    if classes_per_query is not None:
        cpq = np.asarray(classes_per_query, dtype=np.int64)
        if cpq.ndim != 2 or len(cpq) != len(q):
            raise CifarlensError(f"classes_per_query must be ({len(q)}, C), got {cpq.shape}")
        out["class_index"], out["class_similarity"] = _nearest_by_class(q, t, labels, cpq, k)
    return out


def _nearest_by_class(q: np.ndarray, t: np.ndarray, labels: np.ndarray, cpq: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """One product per asked-for class: the queries asking for c against c's training images."""
    idx = np.full(cpq.shape + (k,), -1, dtype=np.int64)
    sim = np.full(cpq.shape + (k,), np.nan, dtype=np.float32)
    for c in np.unique(cpq):
        members = np.flatnonzero(labels == c)
        rows, cols = np.nonzero(cpq == c)
        uniq, inverse = np.unique(rows, return_inverse=True)
        block = max(1, BLOCK_ENTRIES // max(len(members), 1))
        for i in range(0, len(uniq), block):
            sel = slice(i, i + block)
            top, val = _top_k(q[uniq[sel]] @ t[members].T, k)
            pos = np.where(top >= 0, members[np.maximum(top, 0)], -1)
            hit = (inverse >= i) & (inverse < i + block)
            idx[rows[hit], cols[hit]] = pos[inverse[hit] - i]
            sim[rows[hit], cols[hit]] = val[inverse[hit] - i]
    return idx, sim


def label_share(neighbour_labels: np.ndarray, label: np.ndarray | int) -> np.ndarray:
    """(N,) share of each row's neighbours (label -1 = none) that carry `label` (one per row or
    one for all); nan for a row without neighbours."""
    nl = np.asarray(neighbour_labels, dtype=np.int64)
    lab = np.broadcast_to(np.asarray(label, dtype=np.int64), (len(nl),))
    valid = (nl >= 0).sum(1)
    hits = (nl == lab[:, None]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, hits / np.maximum(valid, 1), np.nan)


# --- does a failure sit among its predicted class? -------------------------------------------------

MIN_CLASSES = 5  # fewer clusters (true classes) than this: no interval, no claim
MAJORITY = 0.5  # a failure's own sentence needs more than half of its neighbours predicted-class


def neighbour_share(fail_neighbours: np.ndarray, fail_pred: np.ndarray, fail_true: np.ndarray,
                    ok_neighbours: np.ndarray, ok_true: np.ndarray, *, alpha: float = 0.05,
                    resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Do failures sit nearer their predicted class's training images than correctly classified
    test images of the same true class do?

    Inputs are neighbour labels over all classes, (N, k), -1 for none. Per failure i (true c,
    predicted p): `share` = its neighbours labelled p; `reference` = the mean share of label p
    among the neighbours of correctly classified images of class c; `diff` = share - reference.

    The unit is the true class: failures of one class share their reference images and are
    alike, so the mean difference gets a 95% percentile bootstrap interval resampling classes
    (`clustered_mean_ci`), and the p-value is a one-sided permutation test that reassigns the
    failure/correct labels within each true class (`permutation_within_strata`). Noise covered:
    test-image sampling, for this one trained model (not training seeds).

    `supported`: at least MIN_CLASSES classes, p < alpha and the interval above 0. A failure's
    sentence ("the model's representation places this image among <pred> training images")
    is `claim[i]`: supported, more than half its neighbours labelled p, and its own empirical
    p-value against the correct images of its class, Benjamini-Hochberg adjusted over the
    failures (`q`), below alpha.
    """
    fn, on = np.asarray(fail_neighbours, np.int64), np.asarray(ok_neighbours, np.int64)
    fp, ft, ot = (np.asarray(a, np.int64) for a in (fail_pred, fail_true, ok_true))
    if fn.ndim != 2 or on.ndim != 2 or not len(fn) == len(fp) == len(ft) or len(on) != len(ot):
        raise CifarlensError("neighbour_share: inconsistent shapes")
    share = label_share(fn, fp)
    ref, p_each = np.full(len(fn), np.nan), np.full(len(fn), np.nan)
    for c in np.unique(ft):
        ok_c = on[ot == c]
        if not len(ok_c):
            continue
        for i in np.flatnonzero(ft == c):
            s_ok = label_share(ok_c, fp[i])
            ref[i] = float(np.nanmean(s_ok))
            p_each[i] = (1 + np.sum(s_ok >= share[i] - 1e-12)) / (1 + len(s_ok))
    has = ~np.isnan(ref)
    diff = share - ref
    classes = ft[has]
    res: dict[str, Any] = {
        "share": share, "reference": ref, "diff": diff, "p_each": p_each,
        "n_failures": int(len(fn)), "n_tested": int(has.sum()),
        "n_classes": int(len(np.unique(classes))), "n_reference": int(np.isin(ot, classes).sum()),
        "mean_share": _mean(share[has]), "mean_reference": _mean(ref[has]),
        "mean_diff": _mean(diff[has]), "ci": (None, None), "p": None, "alpha": alpha,
        "resamples": resamples, "seed": seed,
        "noise": "test-image sampling for one trained model; the unit is the true class",
    }
    res["q_each"] = np.full(len(fn), np.nan)
    if has.any():
        from scipy.stats import false_discovery_control

        res["q_each"][has] = false_discovery_control(p_each[has], method="bh")
    if res["n_classes"] >= MIN_CLASSES:
        rng = np.random.default_rng(seed)
        res["ci"] = clustered_mean_ci(diff[has], classes, rng=rng, resamples=resamples)
        res["p"] = _stratified_p(fn, fp, ft, on, ot, has, rng, resamples)
    lo = res["ci"][0]
    res["supported"] = bool(res["p"] is not None and res["p"] < alpha and lo is not None
                            and lo > 0)
    res["claim"] = res["supported"] & (share > MAJORITY) & (res["q_each"] < alpha)
    return res


def _stratified_p(fn, fp, ft, on, ot, has, rng, resamples) -> float:
    """One-sided p of the mean share of the predicted label at the failures' places, against
    random reassignment of those places among the class's failures and correct images."""
    mats, n_fail = [], []
    for c in np.unique(ft[has]):
        f = np.flatnonzero(has & (ft == c))
        pool = np.concatenate([fn[f], on[ot == c]])  # failures first: positions 0..len(f)-1
        # share of failure j's predicted label among pool member u's neighbours, (U, F)
        valid = np.maximum((pool >= 0).sum(1), 1)[:, None]
        mats.append((pool[:, :, None] == fp[f][None, None, :]).sum(1) / valid)
        n_fail.append(len(f))
    return permutation_within_strata(mats, n_fail, rng=rng, resamples=resamples)


def share_change(share_base: np.ndarray, share_variant: np.ndarray, clusters: np.ndarray, *,
                 alpha: float = 0.05, resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """For the same images under two models (e.g. the failures the change fixed: the share of
    their neighbours carrying the BASELINE's predicted label, in the baseline's and in the
    variant's feature space): did the share fall?

    diff = variant - baseline per image. Mean with a 95% bootstrap interval over clusters
    (`clusters`: the true class, or (seed, class) pooled over seeds) and a two-sided sign-flip
    test that swaps the two models within whole clusters (exact up to 16 clusters). `fell` /
    `rose`: p < alpha and the interval wholly below / above 0, with at least MIN_CLASSES
    clusters. Noise covered: test-image sampling, for the pairs of trained models given.
    """
    a, b = np.asarray(share_base, np.float64), np.asarray(share_variant, np.float64)
    cl = np.asarray(clusters)
    if not a.shape == b.shape == cl.shape[:1] or a.ndim != 1:
        raise CifarlensError("share_change: inconsistent shapes")
    ok = ~(np.isnan(a) | np.isnan(b))
    diff = b - a
    n_clusters = int(len(np.unique(cl[ok]))) if ok.any() else 0
    res: dict[str, Any] = {
        "diff": diff, "n": int(ok.sum()), "n_clusters": n_clusters,
        "mean_base": _mean(a[ok]), "mean_variant": _mean(b[ok]), "mean_diff": _mean(diff[ok]),
        "ci": (None, None), "p": None, "alpha": alpha, "resamples": resamples, "seed": seed,
        "noise": "test-image sampling for the trained models given; the unit is the cluster",
    }
    if n_clusters >= MIN_CLASSES:
        rng = np.random.default_rng(seed)
        res["ci"] = clustered_mean_ci(diff[ok], cl[ok], rng=rng, resamples=resamples)
        res["p"] = sign_flip_clusters(diff[ok], cl[ok], rng=rng, resamples=resamples)
    lo, hi = res["ci"]
    tested = res["p"] is not None and res["p"] < alpha
    res["fell"] = bool(tested and hi is not None and hi < 0)
    res["rose"] = bool(tested and lo is not None and lo > 0)
    return res


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None
