"""Do errors favour classes of the true superclass? A test that respects clustered errors.

metrics.superclass_report tests the within-superclass count with an exact binomial test, which
treats every error as an independent draw. On real images they are not: a model that mistakes
one class for another does so for many of that class's images (the issue's example: 9 of 10
errors of one class into one other class), so one true class contributes a block of
near-identical outcomes and the binomial interval is too narrow. Here the unit of resampling is
the **true class** (a cluster bootstrap): classes are drawn with replacement and all of a
drawn class's errors come with it, so the interval covers the sampling of classes as well as
of images within them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CifarlensError
from ._checks import as_labels

DECISIONS = ("above chance", "below chance", "not distinguishable", "not tested")


def superclass_cluster_test(labels: Any, preds: Any, fine_to_coarse: Any, n_boot: int = 10_000,
                            level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The share of errors whose predicted class lies in the true superclass, against chance,
    with percentile cluster-bootstrap intervals by true class (seeded).

    ``chance_share`` is what a uniformly random wrong class would give these errors: the mean
    over errors of (size of the true superclass - 1) / (C - 1), 4/99 for CIFAR-100 (where every
    superclass has 5 classes; metrics.superclass_report averages over classes instead, which
    differs only when superclass sizes differ). ``diff`` = share - chance is recomputed on each
    resample; ``decision`` is "above chance" / "below chance" when its interval excludes 0,
    "not distinguishable" otherwise, "not tested" with no errors or errors in under 2 classes.
    Clusters are all true classes present in ``labels`` (a class without errors is drawn too:
    it adds images but no errors, as in the data).
    """
    f2c = as_labels(fine_to_coarse, "fine_to_coarse")
    c = f2c.shape[0]
    if c < 2:
        raise CifarlensError("fine_to_coarse must map at least 2 classes")
    y = as_labels(labels, "labels", c)
    p = as_labels(preds, "preds", c)
    if y.shape != p.shape or y.size == 0:
        raise CifarlensError(f"{y.size} labels but {p.size} predictions")
    if n_boot < 2 or not 0 < level < 1:
        raise CifarlensError("n_boot must be at least 2 and level between 0 and 1")
    wrong = y != p
    within = wrong & (f2c[y] == f2c[p])
    sizes = np.bincount(f2c)
    chance_of = (sizes[f2c] - 1) / (c - 1)  # per true fine class
    present = np.flatnonzero(np.bincount(y, minlength=c) > 0)
    e = np.bincount(y[wrong], minlength=c)[present].astype(np.float64)
    w = np.bincount(y[within], minlength=c)[present].astype(np.float64)
    ch = e * chance_of[present]
    errors = int(e.sum())
    out: dict[str, Any] = {
        "errors": errors, "errors_within_superclass": int(w.sum()),
        "share": None, "chance_share": None, "diff": None, "ratio": None,
        "share_ci": None, "diff_ci": None, "level": level, "n_boot": n_boot,
        "clusters": int(present.size), "clusters_with_errors": int(np.sum(e > 0)),
        "decision": "not tested",
        "method": "percentile cluster bootstrap over true classes",
        "covers": "test-image sampling, with the errors of one true class resampled together",
    }
    if errors == 0:
        return out
    share, chance = float(w.sum() / errors), float(ch.sum() / errors)
    out.update(share=share, chance_share=chance, diff=share - chance,
               ratio=share / chance if chance > 0 else None)
    if out["clusters_with_errors"] < 2:
        return out
    k = present.size
    draws = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    eb = draws @ e
    keep = eb > 0  # a resample of only error-free classes has no share
    sb = (draws @ w)[keep] / eb[keep]
    db = sb - (draws @ ch)[keep] / eb[keep]
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = (float(x) for x in np.quantile(db, q))
    out.update(share_ci=[float(x) for x in np.quantile(sb, q)], diff_ci=[lo, hi],
               share_se=float(np.std(sb, ddof=1)),
               decision="above chance" if lo > 0 else "below chance" if hi < 0
               else "not distinguishable")
    return out
