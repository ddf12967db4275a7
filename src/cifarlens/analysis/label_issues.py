"""Label issues in the TRAINING set, from out-of-sample probabilities only.

Confident learning needs predicted probabilities from a model that never trained on the image
(cleanlab issue #52: in-sample probabilities make almost every label look right). A run's
validation split is exactly that for its model, and the seeds of a study draw different splits,
so each seed's val predictions cover another part of the training set. `find_issues` runs
cleanlab's `find_label_issues` per run on its own val probabilities, then merges the runs:

  covered     training images in at least one seed's val split (coverage = covered / n_train;
              with val fraction f and S seeds about 1 - (1 - f)^S, 49% for 3 seeds at 20%)
  votes       per covered image, how many of the seeds covering it flag it
  flagged     votes / covering >= `min_share` (default 0.5: with one or two covering seeds, one
              flag is enough)
  ranking     flagged images by their mean self-confidence (the probability of the given label,
              averaged over the covering seeds; cleanlab's default ranking), lowest first

Images outside every val split are not judged at all: the report says how many were covered.
Precision and recall against planted flips: docs/label-issues.md (bench/label_noise.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cifarlens.errors import CifarlensError

FILTER_BY = "prune_by_noise_rate"  # cleanlab's default filter; the one failures.py uses


def cleanlab_flags(labels: np.ndarray, probs: np.ndarray, *, filter_by: str = FILTER_BY
                   ) -> np.ndarray:
    """(N,) bool: cleanlab.filter.find_label_issues on one run's out-of-sample probabilities
    (rows renormalized in float64: cleanlab insists on sums of exactly 1)."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        return np.zeros(len(labels), dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "class k has no examples" in a small val split
        return np.asarray(find_label_issues(labels, p, filter_by=filter_by, n_jobs=1),
                          dtype=bool)


def _check(sets: Sequence[Mapping[str, np.ndarray]], n_train: int
           ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    k = None
    for s, vs in enumerate(sets):
        idx = np.asarray(vs["indices"], dtype=np.int64)
        lab = np.asarray(vs["labels"], dtype=np.int64)
        p = np.asarray(vs["probs"], dtype=np.float64)
        k = p.shape[1] if k is None and p.ndim == 2 else k
        if p.ndim != 2 or p.shape != (len(idx), k) or lab.shape != idx.shape:
            raise CifarlensError(f"val set {s}: need N indices, N labels and (N, {k}) "
                                 f"probabilities, got {idx.shape}, {lab.shape}, {p.shape}")
        if len(idx) and (idx.min() < 0 or idx.max() >= n_train or len(np.unique(idx)) != len(idx)):
            raise CifarlensError(f"val set {s}: indices must be distinct and below {n_train}")
        out.append((idx, lab, p))
    return out


def find_issues(val_sets: Sequence[Mapping[str, np.ndarray]], n_train: int, *,
                filter_by: str = FILTER_BY, min_share: float = 0.5) -> dict[str, Any]:
    """Merge per-run confident-learning flags over seeds; arrays in, arrays out.

    `val_sets`: one mapping per run with `indices` (dataset indices into the training set, as
    in split.npz), `labels` (the given labels) and `probs` (N, K) out-of-sample probabilities.
    Returns the covered images (`covered`, `votes`, `covering`, `self_confidence`,
    `suggested` = argmax of the mean probabilities, `label`), the flagged ones ranked
    (`index`, `rank_*` arrays in that order), `coverage`, and per-run counts.
    """
    if not 0 < min_share <= 1:
        raise CifarlensError(f"min_share must be in (0, 1], got {min_share}")
    checked = _check(val_sets, n_train)
    covering = np.zeros(n_train, dtype=np.int64)
    votes = np.zeros(n_train, dtype=np.int64)
    label = np.full(n_train, -1, dtype=np.int64)
    k = checked[0][2].shape[1] if checked else 0
    prob_sum = np.zeros((n_train, k))
    per_run = []
    for s, (idx, lab, p) in enumerate(checked):
        seen = label[idx] >= 0
        if np.any(label[idx][seen] != lab[seen]):
            raise CifarlensError(f"val set {s} gives other labels than an earlier run for the "
                                 "same images: the runs were trained on different data")
        flags = cleanlab_flags(lab, p, filter_by=filter_by)
        covering[idx] += 1
        votes[idx] += flags
        label[idx] = lab
        prob_sum[idx] += p / p.sum(axis=1, keepdims=True)
        per_run.append({"n": int(len(idx)), "flagged": int(flags.sum())})
    covered = np.flatnonzero(covering > 0)
    mean_p = prob_sum[covered] / covering[covered, None]
    self_conf = mean_p[np.arange(len(covered)), label[covered]] if len(covered) else \
        np.empty(0)
    flagged = votes[covered] / covering[covered] >= min_share - 1e-12
    order = np.lexsort((covered[flagged], self_conf[flagged]))
    pick = np.flatnonzero(flagged)[order]
    return {
        "covered": covered, "covering": covering[covered], "votes": votes[covered],
        "label": label[covered], "self_confidence": self_conf,
        "suggested": mean_p.argmax(1) if len(covered) else np.empty(0, dtype=np.int64),
        "flagged": flagged, "index": covered[pick], "rank_label": label[covered][pick],
        "rank_suggested": mean_p.argmax(1)[pick] if len(covered) else np.empty(0, np.int64),
        "rank_self_confidence": self_conf[pick], "rank_votes": votes[covered][pick],
        "rank_covering": covering[covered][pick],
        "coverage": float(len(covered) / n_train) if n_train else 0.0,
        "n_covered": int(len(covered)), "n_train": int(n_train), "per_run": per_run,
        "filter_by": filter_by, "min_share": min_share,
    }
