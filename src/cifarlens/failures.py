"""High-confidence failure discovery from saved predictions: `cifarlens failures RUN`.

Every wrong prediction is ranked by confidence (then margin). A failure is flagged as a likely
label error with the confident-learning rule (Northcutt et al.): the predicted class j clears
its own per-class threshold t_j (the mean probability the model gives class j on images
labelled j), and the given label gets almost no probability (<= `max_true_prob`). About 6% of
CIFAR-100 test labels are known to be wrong, so the list must separate the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from ._io import locked, save_figure, write_json
from .errors import CifarlensError
from .figures import new_figure, safe_text

CONFIDENT = 0.9


def class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """t_j: mean self-confidence of class j over images labelled j (1.0 where none)."""
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def rank_failures(labels: np.ndarray, probs: np.ndarray, indices: np.ndarray,
                  class_names: list[str], *, max_true_prob: float = 0.02) -> list[dict[str, Any]]:
    """All wrong predictions, most confident first (ties: larger margin first, then index)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    pred = probs.argmax(1)
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.ones((n, 2))
    conf, margin = top2[:, 1], top2[:, 1] - top2[:, 0]
    true_prob = probs[np.arange(n), labels]
    true_rank = 1 + (probs > true_prob[:, None]).sum(1)
    t = class_thresholds(labels, probs)
    suspect = (probs[np.arange(n), pred] >= t[pred]) & (true_prob <= max_true_prob)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.lexsort((indices[wrong], -margin[wrong], -conf[wrong]))]
    return [{
        "rank": r + 1, "position": int(i), "index": int(indices[i]),
        "true": int(labels[i]), "pred": int(pred[i]),
        "true_name": class_names[labels[i]], "pred_name": class_names[pred[i]],
        "confidence": float(conf[i]), "margin": float(margin[i]),
        "true_prob": float(true_prob[i]), "true_rank": int(true_rank[i]),
        "label_error_suspect": bool(suspect[i]),
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


@locked
def find_failures(run: Path, split: str = "test", *, top: int = 12, confident: float = CONFIDENT,
                  max_true_prob: float = 0.02, log=print) -> dict[str, Any]:
    from .evaluate import analysis_index_update, load_predictions, run_data, split_arrays

    if top < 1:
        raise CifarlensError("--top must be at least 1")
    run = Path(run)
    p = load_predictions(run, split)
    data = run_data(run)
    probs = M.softmax(p["logits"])
    fails = rank_failures(p["labels"], probs, p["indices"], data.class_names,
                          max_true_prob=max_true_prob)
    conf = probs.max(1)
    per_class = per_class_errors(p["labels"], p["pred"], conf, data.class_names, confident)
    n_conf = sum(f["confidence"] >= confident for f in fails)
    result = {
        "split": split, "checkpoint": str(p["checkpoint"]), "n": int(len(p["labels"])),
        "total_wrong": len(fails), "confident_threshold": confident,
        "confident_wrong": int(n_conf), "max_true_prob": max_true_prob,
        "label_error_suspects": int(sum(f["label_error_suspect"] for f in fails)),
        "per_class": per_class,
        "top_confident_error_classes": [r for r in per_class if r["confident_errors"]][:10],
        "failures": fails,
    }
    images, _, _ = split_arrays(run, data, split)
    gallery = f"figures/failures_{split}.png"
    plot_gallery(images, fails[:top], run / gallery,
                 title=f"Most confident failures ({split}, ranked)")
    result["figures"] = {"gallery": gallery}
    write_json(run / f"failures_{split}.json", result)
    analysis_index_update(run, f"failures_{split}", {
        "file": f"failures_{split}.json", "figures": result["figures"],
        "numbers": {k: result[k] for k in ("n", "total_wrong", "confident_wrong",
                                          "label_error_suspects", "confident_threshold")}})
    log(f"{split}: {len(fails)} wrong of {result['n']}; {n_conf} with confidence >= "
        f"{confident:.0%}; {result['label_error_suspects']} flagged as likely label errors")
    return result


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
        ax.imshow(img, interpolation="bicubic")
        flag = " [label?]" if f["label_error_suspect"] else ""
        ax.set_title(f"#{f['rank']} (image {f['index']}){flag}\ntrue: {safe_text(f['true_name'])}\n"
                     f"pred: {safe_text(f['pred_name'])} ({100 * f['confidence']:.1f}%)",
                     fontsize=8, color="#b00020" if flag else "black")
    if not fails:
        axes.flat[0].text(0.5, 0.5, "no failures", ha="center", va="center")
    if title:
        fig.suptitle(safe_text(title))
    save_figure(fig, path)
