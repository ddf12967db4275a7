"""Nearest training neighbours of a run's failures (`cifarlens failures`, after ranking).

Reads failures_<split>.json and the split's predictions (both from the current best.pt), gets
float16 features of the training split and of the split from the Run's cache
(features_<split>[_<layer>].npz, checked against best.pt like predictions; computed in one pass
when missing or stale), and writes back into failures_<split>.json:

  each failure   "neighbours": {"pred": [{"index", "label", "similarity"} x k], "true": [...]}
                 (index: the training image's dataset index, as in split.npz), and
                 "neighbour_share" / "neighbour_claim" (analysis.neighbours.neighbour_share)
  top level      "neighbours": {"layer", "k", "features", "summary"}: the tested summary

The neighbours are images the model represents alike, not a cause of the failure. `change`
gives the same view of a study's change (the failures it fixed, baseline vs variant).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from cifarlens import _console as console
from cifarlens._io import locked
from cifarlens.analysis.neighbours import label_share, nearest, neighbour_share, share_change
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.training.features import feature_layer, features
from cifarlens.training.runtime import resolve_device

K = 8
SUMMARY_KEYS = ("n_failures", "n_tested", "n_classes", "n_reference", "mean_share",
                "mean_reference", "mean_diff", "ci", "p", "alpha", "resamples", "supported",
                "noise")


def split_features(run: Run, split: str, layer: str | None = None, *, device: str = "auto",
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """(features, dataset indices, layer name) of a split: the Run's cache when it is current
    and holds the split's images, else one pass written to the cache."""
    x, _, idx = run.split_arrays(split)
    cached = run.current("features", split, layer or "")
    if cached is not None and np.array_equal(cached["indices"], idx):
        return cached["features"], idx, str(cached["layer"])
    dev = resolve_device(device)
    model = run.model()
    if dev.type != "cpu":  # a copy: the Run's cached model stays on the CPU for Grad-CAM
        model = copy.deepcopy(model).to(dev)
    where = feature_layer(model, layer)
    f = features(model, x, run.norm, layer=where, device=dev, progress=progress)
    run.write_features(split, layer or "", {
        "indices": idx.astype(np.int64), "features": f, "layer": np.array(where.name),
        "checkpoint_sha256": np.array(run.checkpoint_sha256())})
    return f, idx, where.name


def _entries(pos: np.ndarray, sim: np.ndarray, train_idx: np.ndarray, train_y: np.ndarray
             ) -> list[dict[str, Any]]:
    return [{"index": int(train_idx[p]), "label": int(train_y[p]), "similarity": round(float(s), 4)}
            for p, s in zip(pos.tolist(), sim.tolist(), strict=True) if p >= 0]


def _labels(index: np.ndarray, train_y: np.ndarray) -> np.ndarray:
    return np.where(index >= 0, train_y[np.maximum(index, 0)], -1)


def _json(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


@locked
def add_neighbours(run: Run | str | os.PathLike, split: str = "test", *, layer: str | None = None,
                   k: int = K, device: str = "auto", log=None, progress: bool = False
                   ) -> dict[str, Any]:
    """Add the k nearest training images (predicted and true class) to every failure of
    failures_<split>.json, with the tested share summary; returns the summary."""
    log = log or console.log
    run = Run.open(run)
    result = run.require_current("failures", split)
    p = run.require_current("predictions", split)
    ftr, itr, name = split_features(run, "train", layer, device=device, progress=progress)
    fq, _, _ = split_features(run, split, layer, device=device, progress=progress)
    ytr = run.data().train_y[itr].astype(np.int64)
    fails = result["failures"]
    pos = np.array([f["position"] for f in fails], dtype=np.int64)
    y, pred = p["labels"].astype(np.int64), p["pred"].astype(np.int64)
    ok = np.flatnonzero((pred == y) & np.isin(y, y[pos]))  # the reference: correct, same classes
    nf = nearest(fq[pos], ftr, ytr, np.stack([pred[pos], y[pos]], axis=1), k)
    nc = nearest(fq[ok], ftr, ytr, None, k)
    res = neighbour_share(_labels(nf["all_index"], ytr), pred[pos], y[pos],
                          _labels(nc["all_index"], ytr), y[ok])
    for j, f in enumerate(fails):
        f["neighbours"] = {side: _entries(nf["class_index"][j, c], nf["class_similarity"][j, c],
                                          itr, ytr) for c, side in enumerate(("pred", "true"))}
        share = res["share"][j]
        f["neighbour_share"] = None if np.isnan(share) else round(float(share), 4)
        f["neighbour_claim"] = bool(res["claim"][j])
    summary = {key: _json(res[key]) for key in SUMMARY_KEYS}
    result["neighbours"] = {
        "layer": name, "asked_layer": layer or "", "k": k, "similarity": "cosine", "train_split": "train",
        "features": {s: Run.features_name(s, layer or "") for s in ("train", split)},
        "summary": summary,
        "what": "training images the model represents alike (its features at this layer), not "
                "a cause of the failure"}
    run.write_failures(split, result)
    run.record(f"neighbours_{split}", {
        "file": Run.failures_name(split), "features": result["neighbours"]["features"],
        "layer": name, "checkpoint_sha256": result["checkpoint_sha256"], "numbers": summary})
    ci = summary["ci"]
    log(f"{split}: neighbours of {len(fails)} failures (layer {name}, k = {k}); predicted-class "
        f"share {_pct(summary['mean_share'])} vs {_pct(summary['mean_reference'])} for correct "
        f"images of the same class"
        + (f", difference 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}], p = {summary['p']:.2g}"
           if ci[0] is not None else " (too few classes for a test)"))
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def change(run_a: Run | str | os.PathLike, run_b: Run | str | os.PathLike, *,
           layer: str | None = None, k: int = K, device: str = "auto") -> dict[str, Any]:
    """The change seen through the data: for test images the variant (run_b) fixed, and as a
    reference those both models get wrong with the same prediction, the share of their k
    neighbours that carry the BASELINE's predicted label, in each model's own feature space
    (each over its own training split; seed-paired runs share it), with share_change's test
    (clusters: the true class). JSON-ready."""
    ra, rb = Run.open(run_a), Run.open(run_b)
    pa, pb = ra.require_current("predictions"), rb.require_current("predictions")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError("baseline and variant were evaluated on different test images")
    y, pred_a, pred_b = pa["labels"], pa["pred"], pb["pred"]
    groups = {"fixed": np.flatnonzero((pred_a != y) & (pred_b == y)),
              "still_wrong": np.flatnonzero((pred_a != y) & (pred_b == pred_a))}
    shares = {}
    for arm, run in (("a", ra), ("b", rb)):
        ftr, itr, _ = split_features(run, "train", layer, device=device)
        fq, _, _ = split_features(run, "test", layer, device=device)
        ytr = run.data().train_y[itr].astype(np.int64)
        for g, pos in groups.items():
            nn = nearest(fq[pos], ftr, ytr, None, k)["all_index"]
            shares[arm, g] = label_share(_labels(nn, ytr), pred_a[pos])
    out: dict[str, Any] = {"layer": layer or "default", "k": k}
    for g, pos in groups.items():
        r = share_change(shares["a", g], shares["b", g], y[pos])
        out[g] = {key: _json(r[key]) for key in ("n", "n_clusters", "mean_base", "mean_variant",
                                                "mean_diff", "ci", "p", "fell", "rose", "noise")}
    return out
