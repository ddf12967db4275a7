"""Comparing a baseline (a) with a variant (b) evaluated on the same test images.

Per-image comparisons are paired: both models see the same images, so their right/wrong
outcomes are correlated and only the images where they disagree carry information about which
is better. Across training seeds the comparison is paired by seed. Differences are always
``b - a`` (positive = the variant is better).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from cifarlens.analysis._checks import as_bool, as_cm, label_names
from cifarlens.analysis.metrics import per_class_accuracy
from cifarlens.errors import CifarlensError

PathLike = str | os.PathLike


def _paired_bool(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = as_bool(correct_a, "correct_a")
    b = as_bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise CifarlensError(
            f"correct_a has {a.shape[0]} images but correct_b has {b.shape[0]}: "
            "a paired comparison needs both models on the same test images"
        )
    if a.size == 0:
        raise CifarlensError("no test images to compare")
    return a, b


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise CifarlensError(f"level must be between 0 and 1, got {level}")
    return float(sps.norm.ppf(0.5 + level / 2))


def mcnemar_exact(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """Exact McNemar test: a two-sided binomial test on the discordant images.

    Under H0 (equal accuracy) each discordant image is equally likely to favour either model,
    so with b = a_only and c = b_only, p = min(1, 2 P(X <= min(b, c))) for X ~ Bin(b + c, 1/2);
    p = 1 when the models never disagree.
    """
    a, b = _paired_bool(correct_a, correct_b)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    k, m = min(a_only, b_only), a_only + b_only
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(sps.binom.cdf(k, m, 0.5)))
    return {
        "n": int(a.size),
        "both_right": int(np.sum(a & b)),
        "both_wrong": int(np.sum(~a & ~b)),
        "a_only": a_only,
        "b_only": b_only,
        "statistic": k,
        "p_value": p,
    }


def accuracy_difference_ci(
    correct_a: Any,
    correct_b: Any,
    level: float = 0.95,
    *,
    method: Literal["wald", "bootstrap"] = "wald",
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Confidence interval for acc_b - acc_a on the same test images.

    Paired, because both accuracies come from the same images: their errors are positively
    correlated (hard images are hard for both), so the unpaired standard error
    sqrt(pa(1-pa)/n + pb(1-pb)/n) ignores the covariance and overstates the uncertainty. With
    b = a_only and c = b_only the paired Wald standard error is sqrt(b + c - (c - b)^2 / n) / n.

    ``method="bootstrap"``: percentile interval from ``n_boot`` resamples of the images (seeded,
    so reproducible). Only the counts of the three outcome kinds (a only, b only, agree) matter
    for the difference, so resampling images is done exactly as one multinomial draw each.
    Bounds are clipped to [-1, 1].
    """
    a, b = _paired_bool(correct_a, correct_b)
    n = int(a.size)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    diff = (b_only - a_only) / n
    z = _z(level)
    if method == "wald":
        se = math.sqrt(max(a_only + b_only - (b_only - a_only) ** 2 / n, 0.0)) / n
        lo, hi, name = diff - z * se, diff + z * se, "paired_wald"
    elif method == "bootstrap":
        if n_boot < 2:
            raise CifarlensError(f"n_boot must be at least 2, got {n_boot}")
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, [a_only / n, b_only / n, 1 - (a_only + b_only) / n], n_boot)
        boot = (draws[:, 1] - draws[:, 0]) / n
        alpha = 1 - level
        lo, hi = (float(q) for q in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
        se = float(np.std(boot, ddof=1))
        name = "paired_bootstrap_percentile"
    else:
        raise CifarlensError(f"unknown method {method!r}: use 'wald' or 'bootstrap'")
    return {
        "diff": diff,
        "lo": max(-1.0, lo),
        "hi": min(1.0, hi),
        "se": se,
        "level": level,
        "method": name,
        "n": n,
        "acc_a": float(a.mean()),
        "acc_b": float(b.mean()),
    }


def paired_mean_diff_ci(
    x: Any, y: Any, level: float = 0.95, *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Mean of x - y over paired units (e.g. one AUC per image from two methods on the same
    images) with a bootstrap CI over the units: `scipy.stats.bootstrap` (BCa, seeded) on the
    per-unit differences, so the pairing is kept. The noise covered is which units were drawn.
    Fewer than 3 units or all differences equal: lo = hi = None (no interval).
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise CifarlensError(f"paired samples differ in length: {a.size} vs {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CifarlensError("paired samples contain NaN or inf")
    _z(level)  # validates
    d = a - b
    out: dict[str, Any] = {"diff": float(d.mean()) if d.size else None, "lo": None, "hi": None,
                           "level": level, "n": int(d.size), "method": "paired_bootstrap_bca"}
    if d.size < 3 or np.ptp(d) == 0:
        return out
    res = sps.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_boot,
                        method="BCa", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa can fail on degenerate samples
        res = sps.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_boot,
                            method="percentile", random_state=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out["method"] = "paired_bootstrap_percentile"
    out["lo"], out["hi"] = lo, hi
    return out


def paired_seed_test(acc_a: Any, acc_b: Any, level: float = 0.95) -> dict[str, Any]:
    """Paired t-test across training seeds: acc_a[i] and acc_b[i] share seed i.

    Returns per-arm mean and sample std, the mean difference (b - a), the t-test p-value and a
    t-based CI of the mean difference. With one seed per arm there is no variance estimate, so
    p-value, std and CI are None and ``note`` says why.
    """
    xa = np.asarray(acc_a, dtype=np.float64)
    xb = np.asarray(acc_b, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != xb.shape or xa.size == 0:
        raise CifarlensError(
            f"acc_a {xa.shape} and acc_b {xb.shape} must be equal-length 1-D arrays, "
            "one entry per seed"
        )
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise CifarlensError("seed accuracies must be finite numbers")
    _z(level)  # validates level
    s = int(xa.size)
    d = xb - xa
    out: dict[str, Any] = {
        "n_seeds": s,
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "std_a": None,
        "std_b": None,
        "mean_diff": float(d.mean()),
        "std_diff": None,
        "t": None,
        "df": None,
        "p_value": None,
        "lo": None,
        "hi": None,
        "level": level,
        "method": "paired_t",
        "note": None,
    }
    if s == 1:
        out["note"] = ("one seed per arm: no seed-to-seed variance to test against; "
                       "run at least 2 (better 3-5) seeds per arm for a p-value")
        return out
    sd = float(np.std(d, ddof=1))
    out.update(std_a=float(np.std(xa, ddof=1)), std_b=float(np.std(xb, ddof=1)), std_diff=sd,
               df=s - 1)
    if sd == 0.0:
        out["note"] = ("the difference is identical for every seed: its variance is 0, so the "
                       "t-test is undefined")
        return out
    res = sps.ttest_rel(xb, xa)
    half = float(sps.t.ppf(0.5 + level / 2, s - 1)) * sd / math.sqrt(s)
    out.update(t=float(res.statistic), p_value=float(res.pvalue),
               lo=float(d.mean() - half), hi=float(d.mean() + half))
    if s < 3:
        out["note"] = "only 2 seeds per arm: the test has 1 degree of freedom and little power"
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values for a family of tests (Holm 1979), in input order.

    Sorted ascending, the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)):
    rejecting where the adjusted p < alpha keeps the chance of any false rejection in the family
    at most alpha, and is never less powerful than Bonferroni. A missing p-value (no test could
    be run) stays None but still counts in m, as a test that rejects nothing: conservative.
    Written here rather than taken from statsmodels: one ten-line function does not justify
    that dependency.
    """
    ps = [None if p is None else float(p) for p in p_values]
    for p in ps:
        if p is not None and not (0.0 <= p <= 1.0):
            raise CifarlensError(f"p-values must lie in [0, 1], got {p}")
    m = len(ps)
    order = sorted(range(m), key=lambda i: 1.0 if ps[i] is None else ps[i])
    out: list[float | None] = [None] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = 1.0 if ps[i] is None else ps[i]
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = None if ps[i] is None else running
    return out


ABLATION_VERDICTS = ("helped", "hurt", "no detectable difference", "not tested")


def ablation_verdict(p_adjusted: float | None, lo: float | None, hi: float | None,
                     alpha: float = 0.05) -> str:
    """helped / hurt: the adjusted p-value is below alpha and the interval of the difference
    (variant minus baseline) lies wholly above / below 0; "no detectable difference" otherwise;
    "not tested" when there is no p-value (one seed: no seed-level test)."""
    if p_adjusted is None:
        return "not tested"
    if p_adjusted < alpha and lo is not None and lo > 0:
        return "helped"
    if p_adjusted < alpha and hi is not None and hi < 0:
        return "hurt"
    return "no detectable difference"


def _same_test_set(cm_a: Any, cm_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = as_cm(cm_a, "cm_a")
    b = as_cm(cm_b, "cm_b")
    if a.shape != b.shape:
        raise CifarlensError(f"confusion matrices differ in shape: {a.shape} vs {b.shape}")
    if not np.array_equal(a.sum(axis=1), b.sum(axis=1)):
        raise CifarlensError(
            "the two confusion matrices have different per-class sample counts: "
            "they were not computed on the same test images"
        )
    return a, b


def confusion_difference(cm_a: Any, cm_b: Any) -> np.ndarray:
    """cm_b - cm_a (int64). Positive diagonal = variant gets that class right more often."""
    a, b = _same_test_set(cm_a, cm_b)
    return b - a


def per_class_changes(
    cm_a: Any, cm_b: Any, class_names: Sequence[str] | None = None, k: int = 10
) -> dict[str, Any]:
    """Per-class accuracy change (b - a): the k most improved and k most worsened classes.

    Each entry: class, name, n (test images), acc_a, acc_b, delta. Improved is sorted by delta
    descending, worsened ascending, ties by class index. Classes without test images are skipped.
    """
    a, b = _same_test_set(cm_a, cm_b)
    names = label_names(class_names, a.shape[0])
    pa, pb = per_class_accuracy(a), per_class_accuracy(b)
    delta = pb - pa
    n = a.sum(axis=1)
    idx = np.flatnonzero(n > 0)

    def row(i: int) -> dict[str, Any]:
        return {"class": int(i), "name": names[i], "n": int(n[i]), "acc_a": float(pa[i]),
                "acc_b": float(pb[i]), "delta": float(delta[i])}

    up = idx[delta[idx] > 0]
    down = idx[delta[idx] < 0]
    # Round so mathematically equal deltas (e.g. 1/2 - 1/4 vs 2/8) tie exactly on class index.
    key = np.round(delta, 12)
    up = up[np.lexsort((up, -key[up]))][:k]
    down = down[np.lexsort((down, key[down]))][:k]
    return {
        "improved": [row(i) for i in up],
        "worsened": [row(i) for i in down],
        "n_improved": int(np.sum(delta[idx] > 0)),
        "n_worsened": int(np.sum(delta[idx] < 0)),
        "n_unchanged": int(np.sum(delta[idx] == 0)),
    }
