"""Classification, calibration and superclass metrics, plus the figures that show them.

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

from ._checks import RANGE_TOL as _RANGE_TOL
from ._checks import as_bool as _as_bool
from ._checks import as_cm as _as_cm
from ._checks import as_labels as _as_labels
from ._checks import as_logits as _as_logits
from ._checks import label_names as _names
from ._checks import probs_and_labels as _probs_and_labels
from ._io import save_figure
from .errors import CifarlensError
from .figures import ARM_COLORS, COLORS, arm_color, new_figure

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


# --------------------------------------------------------------------------- figures



def decorate_class_matrix(ax: Any, names: Sequence[str], order: np.ndarray, groups: Any,
                          group_names: Sequence[str] | None, *, line_color: str) -> None:
    """Class tick labels in `order`; with `groups`, block lines and superclass labels on the
    top and right axes. Shared by every class-by-class matrix figure."""
    from .figures import safe_text

    c = len(order)
    fs = float(min(8.0, max(3.0, 500.0 / c)))
    ticks = np.arange(c)
    shown = [safe_text(names[i]) for i in order]
    ax.set_xticks(ticks, shown, rotation=90, fontsize=fs)
    ax.set_yticks(ticks, shown, fontsize=fs)
    ax.tick_params(length=0)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    if groups is None:
        return
    gnames = None if group_names is None else [safe_text(s) for s in group_names]
    runs = _group_runs(groups[order])
    for start, _, _ in runs[1:]:
        ax.axhline(start - 0.5, color=line_color, lw=0.6)
        ax.axvline(start - 0.5, color=line_color, lw=0.6)
    centres = [(a + b - 1) / 2 for a, b, _ in runs]
    labels = [gnames[g] if gnames and g < len(gnames) else f"group {g}" for _, _, g in runs]
    top = ax.secondary_xaxis("top")
    top.set_xticks(centres, labels, rotation=90, fontsize=max(fs, 6.0))
    top.tick_params(length=0)
    top.set_xlabel("Predicted superclass")
    right = ax.secondary_yaxis("right")
    right.set_yticks(centres, labels, fontsize=max(fs, 6.0))
    right.tick_params(length=0)
    right.set_ylabel("True superclass")

def _group_runs(group_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, group) for each run of equal consecutive group ids."""
    runs, start = [], 0
    for i in range(1, len(group_ids) + 1):
        if i == len(group_ids) or group_ids[i] != group_ids[start]:
            runs.append((start, i, int(group_ids[start])))
            start = i
    return runs


def _check_order(order: Any, n: int) -> np.ndarray:
    o = _as_labels(order, "order", n)
    if o.shape[0] != n or np.unique(o).shape[0] != n:
        raise CifarlensError(f"order must be a permutation of 0..{n - 1}")
    return o


def plot_confusion(
    cm: Any,
    class_names: Sequence[str] | None,
    path: PathLike,
    *,
    order: Any = None,
    group_names: Sequence[str] | None = None,
    group_of: Any = None,
    top_pairs: list[dict[str, Any]] | None = None,
    n_pairs: int = 15,
    title: str | None = None,
) -> None:
    """Row-normalized confusion matrix on a sqrt colour scale, readable at 100 classes.

    With ``group_of`` (e.g. fine_to_coarse) rows and columns are ordered by group, blocks are
    separated by thin lines and labelled with ``group_names``. A side panel lists the most
    confused pairs (``top_pairs`` or computed from ``cm``).
    """
    from matplotlib.colors import PowerNorm

    m = _as_cm(cm)
    c = m.shape[0]
    names = _names(class_names, c)
    groups = None if group_of is None else _as_labels(group_of, "group_of")
    if groups is not None and groups.shape[0] != c:
        raise CifarlensError(f"group_of has {groups.shape[0]} entries but there are {c} classes")
    if order is None:
        order = np.argsort(groups, kind="stable") if groups is not None else np.arange(c)
    order = _check_order(order, c)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)[np.ix_(order, order)]

    side = float(min(14.0, max(5.0, 0.12 * c + 2.0)))
    fig, (ax, tax) = new_figure(
        1, 2, figsize=(side + 4.0, side + 0.8), gridspec_kw={"width_ratios": [side, 3.6]}
    )
    # sqrt scale: off-diagonal shares of 1-5% stay visible next to a 0.8 diagonal.
    im = ax.imshow(share, norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest")
    ax.grid(False)
    decorate_class_matrix(ax, names, order, groups, group_names, line_color="white")
    cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.5, pad=0.01)
    cb.set_label("share of the true class's samples (sqrt scale)")
    n = int(m.sum())
    acc = np.trace(m) / n if n else float("nan")
    # A caller's title names the split/model; the details of what is shown are always kept.
    what = f"row-normalized (N={n}, top-1 {acc:.1%})"
    ax.set_title(f"{title}\n{what}" if title else f"Confusion matrix, {what}")

    pairs = top_pairs if top_pairs is not None else top_confusions(m, names, n_pairs)
    from .figures import safe_text

    lines = [f"{safe_text(q['true_name'])} → {safe_text(q['pred_name'])}: {q['count']}"
             for q in pairs[:n_pairs]]
    tax.axis("off")
    tax.set_title("Most confused pairs\n(true → predicted: count)", loc="left")
    tax.text(0.0, 1.0, "\n".join(lines) or "(no errors)", va="top", ha="left",
             fontsize=8, family="monospace", transform=tax.transAxes)
    save_figure(fig, path)


def plot_superclass_confusion(
    coarse_cm: Any, coarse_names: Sequence[str] | None, path: PathLike, *, title: str | None = None
) -> None:
    """Superclass (e.g. 20x20) confusion counts, coloured on a sqrt scale, counts in cells."""
    from matplotlib.colors import PowerNorm

    m = _as_cm(coarse_cm, "superclass confusion matrix")
    c = m.shape[0]
    from .figures import safe_text

    names = [safe_text(n) for n in _names(coarse_names, c, "coarse_names")]
    side = float(min(12.0, max(4.5, 0.45 * c + 2.0)))
    fig, ax = new_figure(figsize=(side + 1.2, side))
    vmax = max(int(m.max()), 1)
    im = ax.imshow(m, norm=PowerNorm(0.5, vmin=0, vmax=vmax), interpolation="nearest")
    ax.grid(False)
    fs = float(min(8.0, max(4.0, 120.0 / c)))
    for i, j in zip(*np.nonzero(m), strict=True):
        dark = m[i, j] ** 0.5 < 0.6 * vmax**0.5  # viridis is dark at the low end
        # in_layout=False: cell text sits inside the axes; measuring 400 labels for layout
        # would dominate the run time.
        ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=fs,
                color="white" if dark else "black", in_layout=False)
    ticks = np.arange(c)
    ax.set_xticks(ticks, names, rotation=90, fontsize=max(fs, 6.0))
    ax.set_yticks(ticks, names, fontsize=max(fs, 6.0))
    ax.tick_params(length=0)
    ax.set_xlabel("Predicted superclass")
    ax.set_ylabel("True superclass")
    n = int(m.sum())
    acc = np.trace(m) / n if n else float("nan")
    what = f"counts (N={n}, superclass accuracy {acc:.1%})"
    ax.set_title(f"{title}\n{what}" if title else f"Superclass confusion, {what}")
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("count (sqrt scale)")
    save_figure(fig, path)




def _series_label(label: str | None, e: float | None) -> str:
    label = label or "model"
    return label if e is None else f"{label} (ECE {100 * e:.2f}%)"


def plot_reliability(
    bins: dict[str, Any] | Sequence[Series],
    path: PathLike,
    *,
    label: str | None = None,
    ece: float | None = None,
    extra: Sequence[Series] | None = None,
    title: str | None = None,
) -> None:
    """Reliability diagram: accuracy vs confidence per bin, the diagonal, the gap, and below it
    the share of samples per bin.

    ``bins`` is one calibration_bins() record (or its JSON form), or a list of
    ``(label, bins, ece)`` series. The first series is drawn as bars with the gap to its mean
    confidence shaded; further series (``extra``, e.g. after temperature scaling or the other
    model) are overlaid as lines.
    """
    if isinstance(bins, dict):
        series: list[Series] = [(label or "model", bins, ece)]
    else:
        series = [tuple(s) for s in bins]  # type: ignore[misc]
    series += [tuple(s) for s in (extra or [])]  # type: ignore[misc]
    if not series:
        raise CifarlensError("plot_reliability needs at least one series")

    fig, (ax, hax) = new_figure(
        2, 1, figsize=(6.0, 7.0), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    ax.plot([0, 1], [0, 1], ls="--", color=COLORS["neutral"], lw=1, label="perfect calibration")
    width = 1.0 / max(len(series), 1)
    for s, (name, b, e) in enumerate(series):
        edges, count, conf, acc = _bins_arrays(b)
        color = arm_color(name, s)  # baseline and variant in their colours everywhere
        full = count > 0
        lo, w = edges[:-1], np.diff(edges)
        if s == 0:
            ax.bar(lo[full], acc[full], width=w[full], align="edge", color=color, alpha=0.75,
                   edgecolor="white", lw=0.5, label=_series_label(name, e))
            ax.bar(lo[full], conf[full] - acc[full], bottom=acc[full], width=w[full],
                   align="edge", color=COLORS["wrong"], alpha=0.25, hatch="//",
                   edgecolor=COLORS["wrong"], lw=0.0, label="gap to mean confidence")
        else:
            ax.plot(conf[full], acc[full], marker="o", ms=3.5, lw=1.5, color=color,
                    label=_series_label(name, e))
        total = count.sum()
        share = count / total if total else count
        # Side-by-side bars per series so overlaid histograms stay distinguishable.
        hax.bar(lo[full] + w[full] * width * s, share[full], width=w[full] * width,
                align="edge", color=color, alpha=0.8, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    ax.set_title(title or "Reliability diagram (accuracy vs top-label confidence)")
    ax.legend(loc="upper left", fontsize=8)
    hax.set_yscale("log")
    hax.set_xlabel("Confidence (top-label probability)")
    hax.set_ylabel("Share of samples (log)")
    if len(series) > 1:
        hax.legend(loc="upper left", fontsize=7)
    save_figure(fig, path)


def plot_confidence_hist(
    confidences: Any,
    correct: Any,
    path: PathLike,
    *,
    n_bins: int = 20,
    title: str | None = None,
    arm: str = "baseline",
) -> None:
    """Histograms of top-label confidence for right and for wrong predictions, in the colour of
    `arm` (figures.ARM_COLORS): right filled, wrong hatched."""
    c = np.asarray(confidences, dtype=np.float64)
    ok = _as_bool(correct, "correct")
    if c.ndim != 1 or c.shape != ok.shape:
        raise CifarlensError(f"confidences {c.shape} and correct {ok.shape} must be equal 1-D")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    fig, ax = new_figure(figsize=(6.0, 4.0))
    color = ARM_COLORS.get(arm, ARM_COLORS["baseline"])
    for mask, what, fill in ((ok, "right", True), (~ok, "wrong", False)):
        vals = c[mask]
        mean = f", mean {vals.mean():.2f}" if vals.size else ""
        ax.hist(vals, bins=edges, histtype="stepfilled" if fill else "step",
                alpha=0.45 if fill else 1.0, color=color, edgecolor=color, lw=1.2,
                hatch=None if fill else "//", ls="-" if fill else "--",
                label=f"{what} (n={vals.size}{mean})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Top-label confidence")
    ax.set_ylabel("Number of test images")
    ax.set_title(title or "Confidence of right vs wrong predictions")
    ax.legend(loc="upper left")
    save_figure(fig, path)
