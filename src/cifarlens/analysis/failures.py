"""Ranking wrong predictions and flagging likely label errors: arrays in, arrays out (as cleanlab).

Likely label errors: a high-precision confident-learning rule (`label_issues(method="rule")`)
and cleanlab's `find_label_issues` (the field's confident learning, a wider candidate list).
Measured on generated data in docs/analysis.md (`bench/label_noise.py`). `probs` must be
out-of-sample and preferably temperature-scaled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarlens._defaults import CONFIDENT
from cifarlens.errors import CifarlensError

LABEL_ERROR_METHODS = ("cleanlab", "rule")


def class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """t_j: mean self-confidence of class j over images labelled j (1.0 where none)."""
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def label_issues(labels: np.ndarray, probs: np.ndarray, *, method: str = "rule",
                 max_true_prob: float = 0.02) -> np.ndarray:
    """(N,) bool: images whose given label is probably wrong. `probs` must be out-of-sample
    (e.g. test predictions of a model trained on train), preferably temperature-scaled.

    "rule": the predicted class j clears its per-class threshold t_j (mean probability of j on
    images labelled j, as in confident learning) and the given label gets at most
    `max_true_prob`. "cleanlab": `cleanlab.filter.find_label_issues(filter_by=
    "prune_by_noise_rate")`, which estimates the joint of given and true labels and removes as
    many images from each off-diagonal cell as it is estimated to hold. Precision and recall of
    both under random, same-superclass and most-confused flips: docs/analysis.md.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if method not in LABEL_ERROR_METHODS:
        raise CifarlensError(f"unknown label-error method {method!r}; choose from: "
                             f"{', '.join(LABEL_ERROR_METHODS)}")
    if method == "rule":
        pred = probs.argmax(1)
        t = class_thresholds(labels, probs)
        true_prob = probs[np.arange(n), labels]
        return (probs[np.arange(n), pred] >= t[pred]) & (true_prob <= max_true_prob)
    import warnings

    from cleanlab.filter import find_label_issues

    if n < 2 or len(np.unique(labels)) < 2:
        return np.zeros(n, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)  # cleanlab insists on rows summing to 1 exactly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "class k has no examples" on small splits
        return np.asarray(find_label_issues(labels, p, filter_by="prune_by_noise_rate",
                                            n_jobs=1), dtype=bool)


def rank_failures(labels: np.ndarray, probs: np.ndarray, indices: np.ndarray,
                  class_names: list[str], *, raw_probs: np.ndarray | None = None,
                  method: str = "rule", max_true_prob: float = 0.02
                  ) -> list[dict[str, Any]]:
    """All wrong predictions, most confident first (ties: larger margin first, then index).

    `probs` decide confidence, margin and P(true) (pass temperature-scaled ones); `raw_probs`
    (default: `probs`) give `raw_confidence`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    raw = probs if raw_probs is None else raw_probs
    pred = probs.argmax(1)
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.ones((n, 2))
    conf, margin = top2[:, 1], top2[:, 1] - top2[:, 0]
    true_prob = probs[np.arange(n), labels]
    true_rank = 1 + (probs > true_prob[:, None]).sum(1)
    suspect = label_issues(labels, probs, method=method, max_true_prob=max_true_prob)
    cl = label_issues(labels, probs, method="cleanlab") if method != "cleanlab" else suspect
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.lexsort((indices[wrong], -margin[wrong], -conf[wrong]))]
    return [{
        "rank": r + 1, "position": int(i), "index": int(indices[i]),
        "true": int(labels[i]), "pred": int(pred[i]),
        "true_name": class_names[labels[i]], "pred_name": class_names[pred[i]],
        "confidence": float(conf[i]), "raw_confidence": float(raw[i, pred[i]]),
        "margin": float(margin[i]),
        "true_prob": float(true_prob[i]), "true_rank": int(true_rank[i]),
        "label_error_suspect": bool(suspect[i]), "cleanlab_issue": bool(cl[i]),
    } for r, i in enumerate(order)]


def per_class_errors(labels: np.ndarray, pred: np.ndarray, conf: np.ndarray,
                     class_names: list[str], confident: float = CONFIDENT) -> list[dict[str, Any]]:
    k = len(class_names)
    n = np.bincount(labels, minlength=k)
    wrong = np.bincount(labels, weights=(pred != labels), minlength=k)
    cwrong = np.bincount(labels, weights=(pred != labels) & (conf >= confident), minlength=k)
    rows = [{"class": c, "name": class_names[c], "n": int(n[c]),
             "error_rate": float(wrong[c] / n[c]) if n[c] else None,
             "confident_errors": int(cwrong[c])} for c in range(k)]
    return sorted(rows, key=lambda r: (-r["confident_errors"], -(r["error_rate"] or 0), r["class"]))
