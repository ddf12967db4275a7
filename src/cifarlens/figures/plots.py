"""Every figure of the analyses but Grad-CAM's (those are in cam/figures.py): training curves,
confusion matrices, superclass confusion, reliability and confidence, the comparison's confusion
difference and per-class changes, and the failure gallery. Drawn outside pyplot in the one
cifarlens style (figures/style.py), written atomically (style.save_figure). The numbers come
from analysis/ (metrics, stats); this module only draws them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cifarlens.analysis._checks import as_bool as _as_bool
from cifarlens.analysis._checks import as_cm as _as_cm
from cifarlens.analysis._checks import as_labels as _as_labels
from cifarlens.analysis._checks import label_names
from cifarlens.analysis._checks import label_names as _names
from cifarlens.analysis.metrics import Series, _bins_arrays, per_class_accuracy, top_confusions
from cifarlens.analysis.stats import _same_test_set, per_class_changes
from cifarlens.errors import CifarlensError
from cifarlens.figures.style import (
    ARM_COLORS,
    COLORS,
    CURVE_STYLES,
    IMAGE_INTERPOLATION,
    arm_cmap,
    arm_color,
    new_figure,
    safe_text,
    save_figure,
)

PathLike = str | os.PathLike



class ClassGroups(NamedTuple):
    """Classes grouped (e.g. CIFAR-100's superclasses): `of[c]` is class c's group, `names` the
    groups' names. A confusion figure orders and blocks its classes by group."""

    of: Any
    names: Sequence[str] | None = None

def plot_curves(runs: dict[str, list[dict]], path: str | os.PathLike) -> None:
    """Loss and accuracy, train vs val, for one run or several on the same axes. Each run has
    its arm's colour (figures.arm_color: baseline and variant as in every figure); train is
    dashed, validation solid."""
    fig, (ax_l, ax_a) = new_figure(1, 2, figsize=(9, 3.4))
    for k, (name, hist) in enumerate(runs.items()):
        ep = [r["epoch"] for r in hist]
        color = arm_color(name, k)
        tag = f"{name} " if name else ""
        for kind in ("train", "val"):
            ls = CURVE_STYLES[kind]
            ax_l.plot(ep, [r[f"{kind}_loss"] for r in hist], ls, color=color,
                      label=f"{tag}{kind}")
            ax_a.plot(ep, [100 * r[f"{kind}_acc"] for r in hist], ls, color=color,
                      label=f"{tag}{kind}")
    ax_l.set(xlabel="epoch", ylabel="loss (cross-entropy, label-smoothed)", title="Loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_a.legend(fontsize=8)
    save_figure(fig, path)

# --- the metrics' figures: confusion, superclasses, reliability, confidence -----------------



def decorate_class_matrix(ax: Any, names: Sequence[str], order: np.ndarray, groups: Any,
                          group_names: Sequence[str] | None, *, line_color: str) -> None:
    """Class tick labels in `order`; with `groups`, block lines and superclass labels on the
    top and right axes. Shared by every class-by-class matrix figure."""
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
    groups: ClassGroups | None = None,
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
    group_of, group_names = (groups.of, groups.names) if groups else (None, None)
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

# --- the comparison's figures: confusion difference, per-class changes -------------------


def _sign_colors(values: Any) -> list[str]:
    """Each change in the colour of the arm it favours (ARM_COLORS): > 0 variant, else
    baseline."""
    return [ARM_COLORS["variant"] if v > 0 else ARM_COLORS["baseline"] for v in values]


def plot_confusion_difference(
    cm_a: Any,
    cm_b: Any,
    class_names: Sequence[str] | None,
    path: PathLike,
    *,
    order: Any = None,
    groups: ClassGroups | None = None,
    names: tuple[str, str] = ("baseline", "variant"),
    n_pairs: int = 12,
) -> None:
    """Heatmap of cm_b - cm_a (symmetric log colour scale) with the largest off-diagonal changes
    listed beside it. Ordered and blocked by group (superclass) when ``group_of`` is given."""
    from matplotlib.colors import SymLogNorm

    a, b = _same_test_set(cm_a, cm_b)
    d = b - a
    c = d.shape[0]
    labels = label_names(class_names, c)
    group_of, group_names = (groups.of, groups.names) if groups else (None, None)
    groups = None if group_of is None else np.asarray(group_of, dtype=np.int64)
    if groups is not None and groups.shape != (c,):
        raise CifarlensError(f"group_of must have {c} entries")
    if order is None:
        order = np.argsort(groups, kind="stable") if groups is not None else np.arange(c)
    order = _check_order(order, c)
    shown = d[np.ix_(order, order)]

    side = float(min(14.0, max(5.0, 0.12 * c + 2.0)))
    fig, (ax, tax) = new_figure(
        1, 2, figsize=(side + 4.0, side + 0.8), gridspec_kw={"width_ratios": [side, 3.6]}
    )
    vmax = max(int(np.abs(d).max()), 1)
    # symlog: single-image changes stay visible next to large diagonal shifts.
    # Baseline colour -> white -> variant colour: each cell in the colour of the arm with more
    # of it (off the diagonal more is worse, so no red/green).
    im = ax.imshow(shown, cmap=arm_cmap(), norm=SymLogNorm(linthresh=1.0, vmin=-vmax,
                                                          vmax=vmax),
                   interpolation="nearest")
    ax.grid(False)
    decorate_class_matrix(ax, labels, order, groups, group_names, line_color="0.5")
    cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.5, pad=0.01)
    cb.set_label(f"change in count, {names[1]} − {names[0]} (symlog scale)")
    n = int(a.sum())
    gain = (np.trace(b) - np.trace(a)) / n if n else float("nan")
    ax.set_title(f"Confusion change {names[1]} − {names[0]} (N={n}; diagonal: more right; "
                 f"top-1 {100 * gain:+.2f} pp)")

    off = d.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    vals = off[t, p]
    lines = []
    for head, sel in (("more often", vals > 0), ("less often", vals < 0)):
        tt, pp, vv = t[sel], p[sel], vals[sel]
        o = np.lexsort((pp, tt, -np.abs(vv)))[:n_pairs]
        lines.append(f"{head} in {names[1]}:")
        lines += [f"  {safe_text(labels[tt[i]])} → {safe_text(labels[pp[i]])}: {vv[i]:+d}"
                  for i in o] or ["  (none)"]
        lines.append("")
    tax.axis("off")
    tax.set_title("Largest changes in mistakes\n(true → predicted: Δcount)", loc="left")
    tax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
             transform=tax.transAxes)
    save_figure(fig, path)


def plot_per_class_changes(
    cm_a: Any,
    cm_b: Any,
    class_names: Sequence[str] | None,
    path: PathLike,
    *,
    k: int = 10,
    names: tuple[str, str] = ("baseline", "variant"),
) -> None:
    """Left: every class's accuracy change, sorted. Right: the k most improved and worsened,
    by name. Changes in percentage points, b - a."""
    a, b = _same_test_set(cm_a, cm_b)
    labels = label_names(class_names, a.shape[0])
    delta = per_class_accuracy(b) - per_class_accuracy(a)
    have = np.flatnonzero(np.isfinite(delta))
    srt = have[np.argsort(delta[have], kind="stable")]
    ch = per_class_changes(a, b, labels, k)

    fig, (ax, bx) = new_figure(1, 2, figsize=(12.0, max(4.5, 0.28 * 2 * k + 1.5)),
                               gridspec_kw={"width_ratios": [1.4, 1]})
    vals = 100 * delta[srt]
    ax.bar(np.arange(srt.size), vals, width=1.0, color=_sign_colors(vals), lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlim(-0.5, srt.size - 0.5)
    ax.set_xlabel("Classes, sorted by change")
    ax.set_ylabel(f"Accuracy change, {names[1]} − {names[0]} (pp)")
    ax.set_title(f"Per-class accuracy change: {ch['n_improved']} improved, "
                 f"{ch['n_worsened']} worsened, {ch['n_unchanged']} unchanged")

    # Top to bottom: most improved ... most worsened.
    rows = ch["improved"] + ch["worsened"][::-1]
    y = np.arange(len(rows))[::-1]
    bv = [100 * r["delta"] for r in rows]
    bx.barh(y, bv, color=_sign_colors(bv))
    bx.set_yticks(y, [f"{safe_text(r['name'])} (n={r['n']})" for r in rows], fontsize=7)
    bx.axvline(0, color="black", lw=0.8)
    bx.set_xlabel("Accuracy change (pp)")
    bx.set_ylabel("Class")
    bx.set_title(f"Top {k} improved and worsened classes")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=ARM_COLORS["variant"], label=f"{names[1]} better"),
                       Patch(color=ARM_COLORS["baseline"], label=f"{names[0]} better")],
              loc="upper left", fontsize=8)
    save_figure(fig, path)

# --- the failure gallery -------------------------------------------------------------------


def plot_gallery(images: np.ndarray, fails: list[dict[str, Any]], path: Path, *,
                 title: str = "", cols: int = 4) -> None:
    """Top failures: the raw image (upscaled, not normalized), true, predicted, confidence."""
    n = max(1, len(fails))
    rows = (n + cols - 1) // cols
    fig, axes = new_figure(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes.flat, fails, strict=False):
        img = images[f["position"]].transpose(1, 2, 0)
        ax.imshow(img, interpolation=IMAGE_INTERPOLATION)
        flag = " [label?]" if f["label_error_suspect"] else ""
        ax.set_title(f"#{f['rank']} (image {f['index']}){flag}\ntrue: {safe_text(f['true_name'])}\n"
                     f"pred: {safe_text(f['pred_name'])} ({100 * f['confidence']:.1f}%"
                     + (f", raw {100 * f['raw_confidence']:.1f}%" if "raw_confidence" in f else "")
                     + ")",
                     fontsize=8, color="#b00020" if flag else "black")
    if not fails:
        axes.flat[0].text(0.5, 0.5, "no failures", ha="center", va="center")
    if title:
        fig.suptitle(safe_text(title, 160))  # a title, not a label: not cut at 40
    save_figure(fig, path)
