"""Grad-CAM for a trained run, from its checkpoint and saved predictions: `cifarlens explain RUN`.

For each explained image: the map for the predicted class ("why it said X") and for the true
class ("where the evidence for Y was"), raw (not rescaled) in `explanations_<split>.npz`; a
figure for the failures; faithfulness (deletion/insertion of Grad-CAM against i.i.d. random
pixels, a smooth random map at the layer's resolution and a centre prior, with paired bootstrap
CIs over the images); the share of map mass near the image border, failures vs correct with a
permutation test; and on generated data, where the object's box is known, the pointing game.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import explain as X
from ._io import locked, read_json, save_npz
from .data import CifarData
from .errors import CifarlensError

TARGETS = ("predicted", "true", "both")


def _ensure_failures(run: Path, split: str, log) -> dict:
    from .evaluate import evaluate, predictions_current
    from .failures import find_failures
    from .runs import checkpoint_sha256

    if not predictions_current(run, split):
        evaluate(run, (split,), log=log)
    path = run / f"failures_{split}.json"
    if path.exists() and read_json(path).get("checkpoint_sha256") == checkpoint_sha256(run):
        return read_json(path)
    return find_failures(run, split, log=log)


def object_boxes(data: CifarData, split: str, indices: np.ndarray) -> np.ndarray | None:
    """Object boxes of generated data (None for real CIFAR, which has none), from the manifest
    the data was read and verified with (no second read of the dataset)."""
    if data.source != "generated":
        return None
    info = data.extra.get("manifest")
    if info is None:
        from .synth import read_synth_info

        info = read_synth_info(data.folder, verify=False)
    boxes = np.asarray(info["boxes"]["test" if split == "test" else "train"])
    return boxes[indices]


@locked
def explain_run(run: str | Path, split: str = "test", *, failures: int = 12,
                indices: list[int] | None = None, target: str = "both", all_images: bool = False,
                correct_sample: int = 200, steps: int = 16, seed: int = 0, batch_size: int = 256,
                layer: str | None = None, log=print) -> dict[str, Any]:
    from .evaluate import (
        analysis_index_update,
        require_current_predictions,
        run_data,
        split_arrays,
    )
    from .runs import load_model, require_run

    run = require_run(run)
    if target not in TARGETS:
        raise CifarlensError(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")
    data = run_data(run)
    images, labels, ds_idx = split_arrays(run, data, split)
    if indices:  # refused before anything is written (evaluate, failures, gallery)
        missing = sorted(set(indices) - set(ds_idx.tolist()))
        if missing:
            raise CifarlensError(f"indices not in the {split} split: {missing[:5]}")
    fails = _ensure_failures(run, split, log)
    # the maps below come from best.pt: the predictions must come from it too
    p = require_current_predictions(run, split)
    model, _ = load_model(run, "best")
    cam_layer = resolve_layer(model, layer)
    norm = read_json(run / "norm.json")
    mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])

    def normalized(pos: np.ndarray) -> torch.Tensor:
        from .data import normalize

        return normalize(torch.from_numpy(images[pos]), mean, std)

    # Which images: every one, chosen dataset indices, or the top-K confident failures.
    if all_images:
        pos = np.arange(len(labels))
    elif indices:
        where = {int(i): k for k, i in enumerate(ds_idx)}
        missing = [i for i in indices if i not in where]
        if missing:
            raise CifarlensError(f"indices not in the {split} split: {missing[:5]}")
        pos = np.array([where[i] for i in indices])
    else:
        pos = np.array([f["position"] for f in fails["failures"][:failures]], dtype=np.int64)
    if len(pos) == 0:
        raise CifarlensError(f"nothing to explain: no failures in the {split} split")
    pred, true = p["pred"][pos], labels[pos]
    x = normalized(pos)
    maps_pred, maps_true = X.gradcam_pair(model, x, torch.from_numpy(pred), torch.from_numpy(true),
                                          cam_layer, batch_size=batch_size)
    if target == "predicted":
        maps_true = None
    elif target == "true":
        maps_pred = None
    arrays = {"positions": pos, "indices": ds_idx[pos], "pred": pred, "true": true}
    if maps_pred is not None:
        arrays["maps_pred"] = maps_pred.numpy().astype(np.float32)
    if maps_true is not None:
        arrays["maps_true"] = maps_true.numpy().astype(np.float32)
    save_npz(run / f"explanations_{split}.npz", **arrays)

    figs: dict[str, str] = {}
    is_fail = pred != true
    show = np.flatnonzero(is_fail)[:12] if is_fail.any() else np.arange(min(12, len(pos)))
    if len(show) and maps_pred is not None and maps_true is not None:
        figs["gradcam"] = f"figures/gradcam_{split}.png"
        conf = p["confidence"][pos[show]]
        X.plot_explanations(images[pos[show]].transpose(0, 2, 3, 1), maps_pred[show],
                            maps_true[show],
                            [f"image {int(i)}" for i in ds_idx[pos[show]]], run / figs["gradcam"],
                            pred_names=[data.class_names[c] for c in pred[show]],
                            true_names=[data.class_names[c] for c in true[show]],
                            confidences=[float(c) for c in conf])

    # Faithfulness and background reliance: failures vs a seeded sample of correct predictions.
    rng = np.random.default_rng(seed)
    correct_pos = np.flatnonzero(p["pred"] == labels)
    correct_pos = np.sort(rng.choice(correct_pos, min(correct_sample, len(correct_pos)),
                                     replace=False)) if len(correct_pos) else correct_pos
    fail_pos = pos[is_fail] if maps_pred is not None else np.array([], dtype=np.int64)
    result: dict[str, Any] = {"split": split, "explained": int(len(pos)),
                              "layer": _layer_name(model, cam_layer), "target": target}
    groups = {}
    if len(fail_pos):
        groups["failures"] = (fail_pos, maps_pred[is_fail])
    if len(correct_pos):
        xc = normalized(correct_pos)
        mc = X.gradcam(model, xc, torch.from_numpy(p["pred"][correct_pos]), cam_layer,
                       batch_size=batch_size)
        groups["correct"] = (correct_pos, mc)
    faith: dict[str, Any] = {}
    curves = {}
    shares: dict[str, np.ndarray] = {}
    cells = None
    for name, (gpos, gmaps) in groups.items():
        xg, tg = normalized(gpos), torch.from_numpy(p["pred"][gpos])
        if cells is None:  # the explained layer's resolution, for the smooth random baseline
            cells = tuple(X.gradcam(model, xg[:1], tg[:1], cam_layer, upsample=False).shape[-2:])
        faith[name], curves[name] = faithfulness(model, xg, tg, gmaps, cells, steps=steps,
                                                 batch_size=batch_size, seed=seed)
        shares[name] = X.border_share(gmaps, border=BORDER)
    result["faithfulness"] = faith
    result["border_share"] = border_summary(shares, cells or (32, 32), seed=seed)
    if "correct" in curves:
        figs["deletion_insertion"] = f"figures/deletion_insertion_{split}.png"
        c = curves["correct"]
        X.plot_deletion_insertion(c["gradcam"], run / figs["deletion_insertion"],
                                  random_result=c["random"],
                                  baselines={BASELINE_NAMES[k]: c[k]
                                             for k in ("smooth_random", "centre_prior")})
    boxes = object_boxes(data, split, ds_idx[correct_pos]) if len(correct_pos) else None
    if boxes is not None:
        hits = X.pointing_game(groups["correct"][1], boxes)
        result["pointing_game"] = {"hit_rate": float(np.mean(hits)), "n": int(len(hits)),
                                   "on": "correctly classified images (generated data boxes)"}
    result["figures"] = figs
    analysis_index_update(run, f"explain_{split}", {
        "file": f"explanations_{split}.npz", "checkpoint_sha256": str(p["checkpoint_sha256"]),
        **result})
    fa = faith.get("correct", {})
    log(f"explained {len(pos)} {split} images; Grad-CAM deletion AUC {fa.get('deletion_auc', float('nan')):.3f}"
        f" vs random {fa.get('random_deletion_auc', float('nan')):.3f} (lower is more faithful)"
        + (f"; pointing game {100 * result['pointing_game']['hit_rate']:.1f}%"
           if "pointing_game" in result else ""))
    return result


BORDER = X.DEFAULT_BORDER  # px: the outer ring of a 32x32 image (4 px = 43.75% of its pixels)

# The maps Grad-CAM is measured against, weakest first (summary/report names).
BASELINE_NAMES = {"random": "i.i.d. random pixels", "smooth_random": "smooth random map",
                  "centre_prior": "centre prior"}


def faithfulness(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, maps: torch.Tensor,
                 cells: tuple[int, ...], *, steps: int, batch_size: int, seed: int,
                 level: float = 0.95) -> tuple[dict[str, Any], dict[str, dict]]:
    """Deletion/insertion AUCs of Grad-CAM and of three input-independent baselines on the same
    images, and paired bootstrap CIs over the images of Grad-CAM minus each baseline.

    Baselines: i.i.d. random pixels, a smooth random map at the layer's resolution (`cells`,
    upsampled like the CAM) and a fixed centred Gaussian. A map that only beats i.i.d. noise
    may just be smooth and central; the CIs say what the images support.
    """
    from . import stats as S

    n, _, h, w = x.shape
    maps_by = {"gradcam": maps, "random": X.random_maps(n, h, w, seed),
               "smooth_random": X.smooth_random_maps(n, h, w, cells[-2:], seed),
               "centre_prior": X.centre_prior_maps(n, h, w)}
    res = {k: X.deletion_insertion(model, x, t, m, steps=steps, batch_size=batch_size)
           for k, m in maps_by.items()}
    g = res["gradcam"]
    out: dict[str, Any] = {
        "n": int(n), "deletion_auc": float(np.mean(g["deletion_auc"])),
        "insertion_auc": float(np.mean(g["insertion_auc"])),
        "random_deletion_auc": float(np.mean(res["random"]["deletion_auc"])),
        "random_insertion_auc": float(np.mean(res["random"]["insertion_auc"])),
        "level": level, "cells": [int(c) for c in cells[-2:]],
        "noise": f"test-image sampling (paired bootstrap over the {n} images)",
        "comparisons": {},
    }
    for k in BASELINE_NAMES:
        b = res[k]
        out["comparisons"][k] = {
            "name": BASELINE_NAMES[k],
            "deletion_auc": float(np.mean(b["deletion_auc"])),
            "insertion_auc": float(np.mean(b["insertion_auc"])),
            # Grad-CAM minus baseline: negative is better for deletion, positive for insertion
            "deletion_diff": S.paired_mean_diff_ci(g["deletion_auc"], b["deletion_auc"], level,
                                                   seed=seed),
            "insertion_diff": S.paired_mean_diff_ci(g["insertion_auc"], b["insertion_auc"],
                                                    level, seed=seed),
        }
    return out, res


def border_summary(shares: dict[str, np.ndarray], cells: tuple[int, ...], *, seed: int = 0,
                   size: tuple[int, int] = (32, 32)) -> dict[str, Any]:
    """Share of Grad-CAM mass within BORDER px of the edge: failures vs correct predictions,
    with a two-sided permutation test of the difference in means (scipy, seeded; noise covered:
    which test images were drawn), and two references: a uniform map and the centre prior.

    `resolves_border` is False when one cell of the explained layer is wider than the band
    (the default 4x4 layer: 8 px cells against a 4 px band). Then the share is only a function
    of the outer ring of cells, and as every cell's receptive field covers the whole image, it
    says where the map's mass is, not whether the model relies on background; the report says
    that and draws no background conclusion.
    """
    from scipy import stats as sps

    h, w = size
    ch, cw = (int(c) for c in cells[-2:])
    cell_px = max(h / ch, w / cw)
    centre = X.border_share(X.centre_prior_maps(1, h, w), border=BORDER)[0]
    out: dict[str, Any] = {"border_px": BORDER, "cells": [ch, cw], "cell_px": cell_px,
                           "resolves_border": bool(cell_px <= BORDER),
                           "uniform": float(X.border_area_fraction(h, w, BORDER)),
                           "centre_prior": float(centre)}
    clean = {k: v[np.isfinite(v)] for k, v in shares.items()}
    for k, v in clean.items():
        out[k] = float(v.mean()) if len(v) else None
        out[f"n_{k}"] = int(len(v))
    f, c = clean.get("failures"), clean.get("correct")
    if f is not None and c is not None and len(f) >= 2 and len(c) >= 2:
        res = sps.permutation_test((f, c), lambda a, b, axis: a.mean(axis) - b.mean(axis),
                                   permutation_type="independent", vectorized=True,
                                   n_resamples=9999, alternative="two-sided",
                                   random_state=np.random.default_rng(seed))
        out["diff"] = float(f.mean() - c.mean())
        out["p_value"] = float(res.pvalue)
        out["test"] = ("two-sided permutation test of the difference in means, failures vs "
                       "correct predictions (9,999 resamples; test-image sampling)")
    return out


def resolve_layer(model: torch.nn.Module, name: str | None) -> torch.nn.Module:
    """A layer by its module name (e.g. `features.10`); None means the model's Grad-CAM layer."""
    if name is None:
        return X.find_cam_layer(model)
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        # conv layers and their activations, and the model's own Grad-CAM layer (a block for
        # resnet18); any module name works, these are the usual choices
        default = _layer_name(model, X.find_cam_layer(model))
        convs = [n for n, m in modules.items() if n and (
            isinstance(m, torch.nn.Conv2d | torch.nn.ReLU) or n == default)]
        raise CifarlensError(f"no layer {name!r} in this model; choose from: {', '.join(convs)}")
    return modules[name]


def _layer_name(model: torch.nn.Module, layer: torch.nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is layer:
            return name
    return type(layer).__name__
