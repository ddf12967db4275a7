"""High-confidence failure discovery from saved predictions: `cifarlens failures RUN`.

"Confident" is judged on TEMPERATURE-SCALED probabilities (T fitted on the validation split by
`cifarlens evaluate`, read from metrics_<split>.json): with label smoothing the raw softmax is
underconfident (fitted T 0.34-0.45 on the demo), so a cut on raw probabilities finds almost no
confident errors. The raw confidence stays in every record (`raw_confidence`).

Every wrong prediction is ranked by (scaled) confidence, then margin. Likely label errors: a
high-precision confident-learning rule (`label_issues(method="rule")`) decides
`label_error_suspect`; cleanlab's `find_label_issues` (the field's confident learning) is kept
beside it as `cleanlab_issue`, a wider candidate list for review. Measured on generated data
(docs/analysis.md, `bench/label_noise.py`): the rule on scaled probabilities has 95-98%
precision but finds only ~35% of flips to the class the model confuses most; cleanlab finds
~72% of those but at ~14% precision with a 67%-accurate model, i.e. it flags most model errors.
About 6% of CIFAR-100 test labels are wrong, so the failure list must separate the two.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cifarlens import _console as console
from cifarlens._defaults import CONFIDENT
from cifarlens._io import locked
from cifarlens.analysis import metrics as M
from cifarlens.errors import CifarlensError
from cifarlens.figures.plots import plot_gallery  # the gallery is drawn in the figures layer
from cifarlens.runs import Run

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


def scaled_probs(run: Run | str | os.PathLike, split: str, logits: np.ndarray
                 ) -> tuple[np.ndarray, float | None]:
    """Softmax of logits / T with the temperature `evaluate` fitted on val (None: no fit found,
    raw probabilities returned)."""
    t = Run.of(run).temperature(split)
    if t is None:
        return M.softmax(logits), None
    return M.apply_temperature(logits, t), t


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


# Images in a failure gallery at most: `failures --top 1000` once spent 4 min 40 s and 2.2 GB
# drawing an 85 MB figure.
MAX_GALLERY = 48


@locked
def find_failures(run: Run | str | os.PathLike, split: str = "test", *, top: int = 12, confident: float = CONFIDENT,
                  max_true_prob: float = 0.02, method: str = "rule",
                  log=None, progress: bool = False) -> dict[str, Any]:
    """Rank the split's errors, flag likely label errors, draw the gallery, write
    failures_<split>.json. `progress`: a bar with an ETA on stderr (reading the data, ranking,
    drawing, writing) when that lasts more than a couple of seconds. Logs go to stderr."""
    log = log or console.log
    with console.progress(4, f"failures ({split})", progress) as bar:
        return _find_failures(Run.open(run), split, top, confident, max_true_prob, method, log,
                              bar)


def _find_failures(run: Run, split: str, top: int, confident: float, max_true_prob: float,
                   method: str, log, bar) -> dict[str, Any]:
    if top < 1:
        raise CifarlensError("--top must be at least 1")
    if not 0.0 <= confident <= 1.0:
        raise CifarlensError(f"--confident must lie in [0, 1], got {confident}")
    p = run.predictions(split)
    data = run.data()
    bar.update(1)
    raw = M.softmax(p["logits"])
    probs, temperature = scaled_probs(run, split, p["logits"])
    basis = ("temperature-scaled probabilities (T fitted on val)" if temperature is not None
             else "raw softmax probabilities (no fitted temperature found: run evaluate)")
    fails = rank_failures(p["labels"], probs, p["indices"], data.class_names, raw_probs=raw,
                          method=method, max_true_prob=max_true_prob)
    conf = probs.max(1)
    per_class = per_class_errors(p["labels"], p["pred"], conf, data.class_names, confident)
    n_conf = sum(f["confidence"] >= confident for f in fails)
    n_conf_raw = sum(f["raw_confidence"] >= confident for f in fails)
    result = {
        "split": split, "checkpoint": str(p["checkpoint"]),
        "checkpoint_sha256": str(p.get("checkpoint_sha256", "")), "n": int(len(p["labels"])),
        "total_wrong": len(fails), "confident_threshold": confident,
        "confidence_basis": basis, "temperature": temperature,
        "confident_wrong": int(n_conf), "confident_wrong_raw": int(n_conf_raw),
        "label_error_method": method, "max_true_prob": max_true_prob,
        "label_error_suspects": int(sum(f["label_error_suspect"] for f in fails)),
        "cleanlab_issues": int(sum(f["cleanlab_issue"] for f in fails)),
        "per_class": per_class,
        "top_confident_error_classes": [r for r in per_class if r["confident_errors"]][:10],
        "failures": fails,
    }
    bar.update(1)
    images, _, _ = run.split_arrays(split, data)
    gallery = Run.figure_name(f"failures_{split}")
    if top > MAX_GALLERY:  # every failure is in the JSON; the picture stays readable and bounded
        log(f"note: the gallery shows the first {MAX_GALLERY} of the {top} failures asked for "
            f"(all {len(fails)} are in {Run.failures_name(split)})")
    plot_gallery(images, fails[:min(top, MAX_GALLERY)], run.file(gallery),
                 title=f"Most confident failures ({split}, ranked"
                       + (f"; confidence after temperature scaling, T = {temperature:.2f})"
                          if temperature is not None else "; raw confidence)"))
    bar.update(1)
    result["figures"] = {"gallery": gallery}
    run.write_failures(split, result)
    run.record(f"failures_{split}", {
        "file": Run.failures_name(split), "figures": result["figures"],
        "checkpoint_sha256": result["checkpoint_sha256"],
        "numbers": {k: result[k] for k in ("n", "total_wrong", "confident_wrong",
                                          "confident_wrong_raw", "label_error_suspects",
                                          "confident_threshold", "temperature")}})
    bar.update(1)
    log(f"{split}: {len(fails)} wrong of {result['n']}; {n_conf} with confidence >= "
        f"{confident:.0%} on {basis} ({n_conf_raw} on raw probabilities); "
        f"{result['label_error_suspects']} flagged as likely label errors ({method}; cleanlab "
        f"candidates: {result['cleanlab_issues']})")
    return result

