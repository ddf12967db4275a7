"""Resampling tests whose unit is a cluster of images (a true class), not an image.

Failures of one class share their reference images and are alike, so treating them as
independent would make intervals too narrow. scipy.stats.bootstrap and permutation_test
resample single observations (no clusters, no strata), hence these three short functions; each
is checked against an exact enumeration or a known answer in tests/analysis/.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np

CHUNK = 1000  # resamples drawn at a time: bounded memory for large strata


def clustered_mean_ci(values: np.ndarray, clusters: np.ndarray, *, rng: np.random.Generator,
                      resamples: int = 9999, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`, resampling whole clusters with
    replacement (the mean over the images of the drawn clusters, a ratio estimator)."""
    v = np.asarray(values, dtype=np.float64)
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(inv, weights=v)
    counts = np.bincount(inv).astype(np.float64)
    g = len(sums)
    means = np.empty(resamples)
    for i in range(0, resamples, CHUNK):
        draw = rng.integers(0, g, (min(CHUNK, resamples - i), g))
        means[i:i + len(draw)] = sums[draw].sum(1) / counts[draw].sum(1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def permutation_within_strata(mats: Sequence[np.ndarray], n_first: Sequence[int], *,
                              rng: np.random.Generator, resamples: int = 9999) -> float:
    """One-sided (greater) permutation p-value, permuting within strata.

    Stratum s has a (U, F) matrix M: M[u, j] is the value that item j's statistic takes when
    it sits at pool place u; item j's own place is u = j (the first F places). The statistic is
    the sum over strata of sum_j M[place_j, j]; under the null the F places of a stratum are a
    uniformly random F-subset of its U places, in random order.
    """
    observed = sum(float(np.trace(m[:f, :f])) for m, f in zip(mats, n_first, strict=True))
    total = np.zeros(resamples)
    for m, f in zip(mats, n_first, strict=True):
        u = len(m)
        cols = np.arange(f)
        for i in range(0, resamples, CHUNK):
            r = min(CHUNK, resamples - i)
            places = rng.permuted(np.tile(np.arange(u), (r, 1)), axis=1)[:, :f]
            total[i:i + r] += m[places, cols].sum(1)
    return float((1 + np.sum(total >= observed - 1e-9)) / (resamples + 1))


EXACT_MAX = 16  # up to 2**16 sign patterns are enumerated instead of sampled


def sign_flip_clusters(diff: np.ndarray, clusters: np.ndarray, *, rng: np.random.Generator,
                       resamples: int = 9999) -> float:
    """Two-sided p-value of sum(diff) = 0 for paired differences, flipping the sign of whole
    clusters (the two conditions are exchangeable under the null). Exact enumeration up to
    EXACT_MAX clusters, else `resamples` random sign patterns."""
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    d = np.bincount(inv, weights=np.asarray(diff, dtype=np.float64))
    observed = abs(float(d.sum())) - 1e-9 * (1 + np.abs(d).sum())
    if len(d) <= EXACT_MAX:
        signs = np.array(list(product((1.0, -1.0), repeat=len(d))))
        return float(np.mean(np.abs(signs @ d) >= observed))
    hits = 0
    for i in range(0, resamples, CHUNK):
        signs = rng.choice((-1.0, 1.0), (min(CHUNK, resamples - i), len(d)))
        hits += int(np.sum(np.abs(signs @ d) >= observed))
    return float((1 + hits) / (resamples + 1))
