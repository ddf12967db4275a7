"""Classification, calibration and superclass metrics (their figures are drawn in figures/plots.py).

Everything works on plain numpy arrays saved from an evaluation (labels, probs, logits), so an
analysis can be rerun without the model. Conventions:

- ``labels``: int array (N,); ``preds``: int array (N,); ``probs``: softmax outputs (N, C);
  ``logits``: raw scores (N, C).
- Confusion matrices have rows = true class, columns = predicted class, int64 counts.
- Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest

from cifarlens.analysis._checks import RANGE_TOL as _RANGE_TOL
from cifarlens.analysis._checks import as_bool as _as_bool
from cifarlens.analysis._checks import as_cm as _as_cm
from cifarlens.analysis._checks import as_labels as _as_labels
from cifarlens.analysis._checks import as_logits as _as_logits
from cifarlens.analysis._checks import label_names as _names
from cifarlens.analysis._checks import probs_and_labels as _probs_and_labels
from cifarlens.errors import CifarlensError

PathLike = str | os.PathLike
Series = tuple[str, dict[str, Any], float | None]

_EPS = 1e-12


# --------------------------------------------------------------------------- basic metrics


def softmax(logits: Any) -> np.ndarray:
    """Softmax over the last axis, in float64; subtracting the row max avoids overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def _nll_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(_log_softmax(z)[np.arange(y.shape[0]), y]))


def nll(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class, with p clipped at 1e-12."""
    p, y = _probs_and_labels(probs, labels)
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.shape[0]), y], _EPS))))


def brier(probs: Any, labels: Any) -> float:
    """Mean over samples of sum over classes of (p - onehot)^2 (range [0, 2])."""
    p, y = _probs_and_labels(probs, labels)
    # sum_c (p_c - 1[c=y])^2 = sum_c p_c^2 - 2 p_y + 1, without building the one-hot matrix.
    p_true = p[np.arange(y.shape[0]), y]
    return float(np.mean(np.sum(p * p, axis=1) - 2.0 * p_true + 1.0))


def confidences_and_correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and whether the top-1 prediction is right, per sample."""
    p, y = _probs_and_labels(probs, labels)
    pred = np.argmax(p, axis=1)
    return p[np.arange(y.shape[0]), pred], pred == y


def topk_accuracy(probs: Any, labels: Any, k: int = 1) -> float:
    """Share of samples whose true class is among the k highest probabilities."""
    p, y = _probs_and_labels(probs, labels)
    if not 1 <= k <= p.shape[1]:
        raise CifarlensError(f"k must be between 1 and {p.shape[1]}, got {k}")
    # Stable sort on -p: ties go to the lower class index, consistent with argmax for k=1.
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def confusion_matrix(labels: Any, preds: Any, num_classes: int) -> np.ndarray:
    """Counts (int64) with rows = true class and columns = predicted class."""
    if num_classes < 1:
        raise CifarlensError(f"num_classes must be positive, got {num_classes}")
    y = _as_labels(labels, "labels", num_classes)
    p = _as_labels(preds, "preds", num_classes)
    if y.shape != p.shape:
        raise CifarlensError(f"{y.shape[0]} labels but {p.shape[0]} predictions")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(cm: Any) -> np.ndarray:
    """Recall per true class; NaN where a class has no samples."""
    m = _as_cm(cm)
    rows = m.sum(axis=1)
    out = np.full(m.shape[0], np.nan)
    np.divide(np.diag(m), rows, out=out, where=rows > 0)
    return out


def macro_f1(cm: Any) -> float:
    """Unweighted mean F1 over classes that occur as a true or a predicted label.

    Classes absent from both are excluded (as scikit-learn does by default); a present class
    with no true positives scores 0.
    """
    m = _as_cm(cm)
    tp = np.diag(m).astype(np.float64)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    if not present.any():
        raise CifarlensError("confusion matrix is empty: no samples")
    # 2PR/(P+R) == 2tp/(2tp+fp+fn), which is also 0 (not 0/0) when tp = 0.
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(np.mean(f1))


# --------------------------------------------------------------------------- calibration


def calibration_bins(confidences: Any, correct: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width reliability bins on the top-label confidence.

    Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 goes to bin 0 and one
    of exactly 1.0 to the last bin (there is no hidden extra bin, unlike torchmetrics #3510).

    Returns ``edges`` (n+1,), ``count`` (n,) int64, ``confidence`` (mean confidence per bin) and
    ``accuracy`` (n,), the last two NaN for empty bins.
    """
    if n_bins < 1:
        raise CifarlensError(f"n_bins must be positive, got {n_bins}")
    c = np.asarray(confidences, dtype=np.float64)
    ok = _as_bool(correct, "correct")
    if c.ndim != 1 or c.shape != ok.shape:
        raise CifarlensError(f"confidences {c.shape} and correct {ok.shape} must be equal 1-D")
    if not np.all(np.isfinite(c)) or (c.size and (c.min() < -_RANGE_TOL or c.max() > 1 + _RANGE_TOL)):
        raise CifarlensError("confidences must lie in [0, 1]")
    edges = np.arange(n_bins + 1) / n_bins  # exact i/n, matching the definition above
    # side="left" gives the i with edges[i-1] < c <= edges[i], i.e. bin i-1 is (lo, hi].
    idx = np.clip(np.searchsorted(edges, c, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(idx, weights=c, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=ok.astype(np.float64), minlength=n_bins)
    mean_conf = np.full(n_bins, np.nan)
    acc = np.full(n_bins, np.nan)
    np.divide(conf_sum, count, out=mean_conf, where=count > 0)
    np.divide(acc_sum, count, out=acc, where=count > 0)
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def _bins_arrays(bins: dict[str, Any]) -> tuple[np.ndarray, ...]:
    # Accepts both calibration_bins() output and its JSON form (lists with None for empty bins).
    try:
        edges = np.asarray(bins["edges"], dtype=np.float64)
        count = np.asarray(bins["count"], dtype=np.float64)
        conf = np.asarray(bins["confidence"], dtype=np.float64)
        acc = np.asarray(bins["accuracy"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise CifarlensError(f"not a calibration-bins record: {e}") from None
    if not (edges.shape[0] == count.shape[0] + 1 == conf.shape[0] + 1 == acc.shape[0] + 1):
        raise CifarlensError("calibration bins have inconsistent lengths")
    return edges, count, conf, acc


def _ece_from_bins(bins: dict[str, Any]) -> float:
    _, count, conf, acc = _bins_arrays(bins)
    nonempty = count > 0
    return float(np.sum(count[nonempty] / count.sum() * np.abs(acc[nonempty] - conf[nonempty])))


def ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error: sum over bins of (count/N) * |accuracy - confidence|."""
    return _ece_from_bins(calibration_bins(*confidences_and_correct(probs, labels), n_bins))


def mce(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
    return mce_with_count(probs, labels, n_bins)[0]


def _mce_from_bins(bins: dict[str, Any]) -> tuple[float, int]:
    _, count, conf, acc = _bins_arrays(bins)
    nonempty = np.flatnonzero(count > 0)
    gaps = np.abs(acc[nonempty] - conf[nonempty])
    k = int(np.argmax(gaps))  # first bin on ties
    return float(gaps[k]), int(count[nonempty[k]])


def mce_with_count(probs: Any, labels: Any, n_bins: int = 15) -> tuple[float, int]:
    """MCE and the number of images in the bin it comes from. A maximum over 15 bins is often
    set by a nearly empty bin (the demo's 93.5% MCE was one image), so report the two together
    (`MCE_MIN_COUNT`: below it the report calls the MCE unreliable)."""
    return _mce_from_bins(calibration_bins(*confidences_and_correct(probs, labels), n_bins))


# Below this many images the MCE's bin accuracy has a standard error above ~9 points.
MCE_MIN_COUNT = 30


# --------------------------------------------------------------------------- temperature scaling


def fit_temperature(
    logits: Any, labels: Any, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature T minimizing the NLL of softmax(logits / T) on a held-out (validation) set.

    Never fit on the test set you report on. NLL is convex in 1/T, hence unimodal in log T, so a
    bounded Brent search on log T finds the global optimum deterministically.
    """
    z = _as_logits(logits)
    y = _as_labels(labels, num_classes=z.shape[1])
    if y.shape[0] != z.shape[0]:
        raise CifarlensError(f"{y.shape[0]} labels but {z.shape[0]} rows of logits")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(
        lambda log_t: _nll_from_logits(z * math.exp(-log_t), y),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    t = float(math.exp(res.x))
    if min(res.x - lo, hi - res.x) < 1e-3:
        # Typical when fitting on training data (all right: T -> 0) or on noise (T -> inf).
        warnings.warn(
            f"temperature hit the search bound ({t:.3g}); is this really a held-out set?",
            RuntimeWarning,
            stacklevel=2,
        )
    return t


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """softmax(logits / T). Dividing by a positive T never changes the argmax."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise CifarlensError(f"temperature must be a positive number, got {temperature}")
    return softmax(_as_logits(logits) / temperature)


# --------------------------------------------------------------------------- superclasses


def superclass_report(
    labels: Any, preds: Any, fine_to_coarse: Any, num_coarse: int = 20
) -> dict[str, Any]:
    """How wrong predictions relate to CIFAR-100 superclasses.

    ``within_superclass_share`` is the share of wrong predictions whose predicted fine class
    lies in the true superclass (NaN with no errors). ``chance_share`` is what uniformly random
    wrong guesses would give: mean over fine classes of (superclass size - 1) / (C - 1), i.e.
    4/99 for CIFAR-100. ``coarse_confusion`` is a (num_coarse, num_coarse) int64 array.

    Whether errors favour related classes is tested, not read off the two shares:
    ``binomial_p`` is the two-sided exact binomial test of ``errors_within_superclass`` out of
    ``errors`` against ``chance_share`` (the noise it covers is which test images were drawn),
    and ``share_ci`` the 95% Clopper-Pearson interval of the share (None with no errors).
    """
    f2c = _as_labels(fine_to_coarse, "fine_to_coarse", num_coarse)
    num_classes = f2c.shape[0]
    if num_classes < 2:
        raise CifarlensError("fine_to_coarse must map at least 2 classes")
    y = _as_labels(labels, "labels", num_classes)
    p = _as_labels(preds, "preds", num_classes)
    if y.shape != p.shape:
        raise CifarlensError(f"{y.shape[0]} labels but {p.shape[0]} predictions")
    if y.size == 0:
        raise CifarlensError("no samples")
    cy, cp = f2c[y], f2c[p]
    wrong = y != p
    errors = int(wrong.sum())
    within = int(np.sum(wrong & (cy == cp)))
    sizes = np.bincount(f2c, minlength=num_coarse)
    chance = float(np.mean((sizes[f2c] - 1) / (num_classes - 1)))
    p_value: float | None = None
    ci: list[float] | None = None
    if errors:
        bt = binomtest(within, errors, chance) if 0 < chance < 1 else None
        p_value = float(bt.pvalue) if bt is not None else None
        if bt is not None:
            lo_hi = bt.proportion_ci(0.95, method="exact")
            ci = [float(lo_hi.low), float(lo_hi.high)]
    return {
        "n": int(y.size),
        "coarse_accuracy": float(np.mean(cy == cp)),
        "errors": errors,
        "errors_within_superclass": within,
        "within_superclass_share": within / errors if errors else float("nan"),
        "chance_share": chance,
        "binomial_p": p_value,
        "share_ci": ci,
        "coarse_confusion": confusion_matrix(cy, cp, num_coarse),
    }


def top_confusions(
    cm: Any, class_names: Sequence[str] | None = None, k: int = 20
) -> list[dict[str, Any]]:
    """The k most frequent (true, pred) mistakes; ties broken by (true, pred) ascending."""
    m = _as_cm(cm)
    names = _names(class_names, m.shape[0])
    off = m.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[: max(k, 0)]  # last key is primary
    rows = m.sum(axis=1)
    return [
        {
            "true": int(t[i]),
            "pred": int(p[i]),
            "true_name": names[t[i]],
            "pred_name": names[p[i]],
            "count": int(counts[i]),
            "share_of_true": float(counts[i] / rows[t[i]]),
        }
        for i in order
    ]


# --------------------------------------------------------------------------- one-shot summary


def _jsonable(obj: Any) -> Any:
    """Plain python types only; NaN (undefined, e.g. an empty bin) becomes None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def summarize(
    labels: Any,
    probs: Any,
    *,
    logits: Any = None,
    class_names: Sequence[str],
    fine_to_coarse: Any = None,
    coarse_names: Sequence[str] | None = None,
    n_bins: int = 15,
    k_confusions: int = 20,
) -> dict[str, Any]:
    """Every metric above in one JSON-ready dict (python scalars and lists; NaN -> None).

    With ``logits`` the loss comes from an exact log-softmax instead of clipped probs; they must
    match ``probs`` in shape.
    """
    p, y = _probs_and_labels(probs, labels)
    n, c = p.shape
    names = _names(class_names, c)
    pred = np.argmax(p, axis=1)
    cm = confusion_matrix(y, pred, c)
    conf, correct = p[np.arange(n), pred], pred == y
    bins = calibration_bins(conf, correct, n_bins)
    nonempty = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][nonempty] - bins["confidence"][nonempty])
    if logits is not None:
        z = _as_logits(logits)
        if z.shape != p.shape:
            raise CifarlensError(f"logits shape {z.shape} does not match probs {p.shape}")
        loss = _nll_from_logits(z, y)
    else:
        loss = nll(p, y)
    out: dict[str, Any] = {
        "n": n,
        "num_classes": c,
        "loss": loss,
        "top1": float(np.mean(correct)),
        "top5": topk_accuracy(p, y, min(5, c)),
        "macro_f1": macro_f1(cm),
        "ece": float(np.sum(bins["count"][nonempty] / n * gaps)),
        "mce": float(np.max(gaps)),
        "mce_count": _mce_from_bins(bins)[1],
        "brier": brier(p, y),
        "mean_confidence": float(np.mean(conf)),
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm,
        "calibration": {"n_bins": n_bins, **bins},
        "top_confusions": top_confusions(cm, names, k_confusions),
    }
    if fine_to_coarse is not None:
        f2c = _as_labels(fine_to_coarse, "fine_to_coarse")
        if f2c.shape[0] != c:
            raise CifarlensError(f"fine_to_coarse maps {f2c.shape[0]} classes but probs has {c}")
        num_coarse = len(coarse_names) if coarse_names is not None else int(f2c.max()) + 1
        sc = superclass_report(y, pred, f2c, num_coarse)
        sc["per_coarse_accuracy"] = per_class_accuracy(sc["coarse_confusion"])
        if coarse_names is not None:
            sc["coarse_names"] = [str(s) for s in coarse_names]
        out["superclass"] = sc
    return _jsonable(out)
