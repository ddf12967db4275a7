"""Where the variance of a seed-paired comparison comes from (after Jordan 2023, ICLR 2024).

Per image i and seed s, delta_is = correct_variant - correct_baseline is -1, 0 or 1, and the
seed's accuracy difference is d_s = mean_i delta_is over the n test images, the same images
for every seed. Write mu_i for image i's expected delta over training seeds. Then

- the **seed-level SD** (SD of d_s across seeds) is what the paired t interval is built on. If
  the runs' errors are independent across images (Jordan's finding for CIFAR trainings), its
  square is (1/n) mean_i Var_s(delta_is); an excess over that is correlated errors, i.e. seeds
  that differ in quality on the whole distribution, not image by image.
- the **image-sampling SD** of one pair, sqrt(b + c - (c - b)^2 / n) / n from its McNemar
  counts, is how far that pair's difference would move if the test images were drawn again
  with the two models fixed: what its McNemar test and Wald interval cover.
- the **test-set component** Var_i(mu_i) / n is shared by every seed, because every seed is
  scored on the same images: the seed-level interval does not include it. A claim about the
  change on the underlying distribution (not on these n images) has standard error
  sqrt(seed_var / S + Var_i(mu_i) / n).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import CifarlensError


def image_sampling_sd(a_only: Any, b_only: Any, n: Any) -> np.ndarray | float:
    """SD of one pair's accuracy difference over redrawn test images, from its discordant
    counts (a_only: only the baseline right, b_only: only the variant right) and the number of
    images: sqrt(b + c - (c - b)^2 / n) / n, the multinomial variance of (c - b) / n (the paired
    Wald standard error of stats.accuracy_difference_ci). Arrays give one SD per seed."""
    b = np.asarray(a_only, dtype=np.float64)
    c = np.asarray(b_only, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    if np.any(b < 0) or np.any(c < 0) or np.any(m <= 0) or np.any(b + c > m):
        raise CifarlensError("McNemar counts must be non-negative and at most the image count")
    sd = np.sqrt(np.maximum(b + c - (c - b) ** 2 / m, 0.0)) / m
    return float(sd) if sd.ndim == 0 else sd


def _correct_matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.size == 0:
        raise CifarlensError(f"{name} must be a (seeds, images) array of right/wrong")
    if a.dtype != np.bool_:
        if not np.all(np.isin(a, (0, 1))):
            raise CifarlensError(f"{name} must hold only right/wrong (0/1) values")
        a = a.astype(bool)
    return a


def variance_sources(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """The variance of the study's mean difference split by source, from per-image right/wrong
    of both arms, (seeds, images) each, row s of both arms trained with seed s, columns the
    same test images. Variances in squared accuracy units; SDs in accuracy units.

    - ``seed_sd``: SD of d_s across seeds (ddof 1): the seed-level t interval's SD.
    - ``independent_sd``: sqrt((1/n) mean_i Var_s(delta_is)) (ddof 1 over seeds, unbiased):
      what seed_sd would be if errors were independent across images.
    - ``image_sampling_sd``: the mean over seeds of each pair's McNemar-implied SD.
    - ``test_set_var``: unbiased estimate of Var_i(mu_i) / n, the part all seeds share
      (Var_i of the seed-mean delta, minus its seed noise mean_i Var_s / S), clipped at 0.
    - ``se_seeds`` = seed_sd / sqrt(S): the standard error the t interval uses;
      ``se_both`` = sqrt(seed_sd^2 / S + test_set_var): for a claim about the distribution.
    """
    a = _correct_matrix(correct_a, "correct_a")
    b = _correct_matrix(correct_b, "correct_b")
    if a.shape != b.shape:
        raise CifarlensError(f"correct_a {a.shape} and correct_b {b.shape} differ in shape")
    s, n = a.shape
    if s < 2:
        raise CifarlensError("splitting the variance needs at least 2 seeds")
    delta = b.astype(np.float64) - a.astype(np.float64)
    d = delta.mean(axis=1)
    seed_var = float(np.var(d, ddof=1))
    v = np.var(delta, axis=0, ddof=1)  # per image, across seeds
    mu = delta.mean(axis=0)
    test_set_var = max(float(np.var(mu, ddof=1) - v.mean() / s), 0.0) / n if n >= 2 else 0.0
    per_seed = image_sampling_sd(np.sum(a & ~b, axis=1), np.sum(~a & b, axis=1), n)
    return {
        "n_seeds": s, "n_images": n,
        "seed_sd": math.sqrt(seed_var),
        "independent_sd": math.sqrt(float(v.mean()) / n),
        "image_sampling_sd": float(np.mean(per_seed)),
        "image_sampling_sd_per_seed": [float(x) for x in np.atleast_1d(per_seed)],
        "test_set_var": test_set_var,
        "se_seeds": math.sqrt(seed_var / s),
        "se_both": math.sqrt(seed_var / s + test_set_var),
    }
