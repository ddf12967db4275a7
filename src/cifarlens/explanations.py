"""Grad-CAM for a trained run, from its checkpoint and saved predictions: `cifarlens explain RUN`.

For each explained image: the map for the predicted class ("why it said X") and for the true
class ("where the evidence for Y was"), raw (not rescaled) in `explanations_<split>.npz`; a
figure for the failures; faithfulness (deletion/insertion vs random maps); background reliance
(share of map mass on the image border, failures vs correct); and on generated data, where the
object's box is known, the pointing game.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import explain as X
from ._io import read_json, save_npz
from .errors import CifarlensError

TARGETS = ("predicted", "true", "both")


def _ensure_failures(run: Path, split: str, log) -> dict:
    from .evaluate import evaluate
    from .failures import find_failures

    if not (run / f"predictions_{split}.npz").exists():
        evaluate(run, (split,), log=log)
    path = run / f"failures_{split}.json"
    return read_json(path) if path.exists() else find_failures(run, split, log=log)


def object_boxes(run: Path, split: str, indices: np.ndarray) -> np.ndarray | None:
    """Object boxes of generated data (None for real CIFAR, which has none)."""
    from .evaluate import run_data
    from .synth import read_synth_info

    data = run_data(run)
    if data.source != "generated":
        return None
    info = read_synth_info(data.folder, verify=False)
    boxes = np.asarray(info["boxes"]["test" if split == "test" else "train"])
    return boxes[indices]


def explain_run(run: str | Path, split: str = "test", *, failures: int = 12,
                indices: list[int] | None = None, target: str = "both", all_images: bool = False,
                correct_sample: int = 200, steps: int = 16, seed: int = 0, batch_size: int = 256,
                layer: str | None = None, log=print) -> dict[str, Any]:
    from .evaluate import analysis_index_update, load_predictions, run_data, split_arrays
    from .runs import load_model, require_run

    run = require_run(run)
    if target not in TARGETS:
        raise CifarlensError(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")
    fails = _ensure_failures(run, split, log)
    p = load_predictions(run, split)
    data = run_data(run)
    images, labels, ds_idx = split_arrays(run, data, split)
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
    border: dict[str, Any] = {"border_px": BORDER}
    curves = {}
    for name, (gpos, gmaps) in groups.items():
        xg, tg = normalized(gpos), torch.from_numpy(p["pred"][gpos])
        di = X.deletion_insertion(model, xg, tg, gmaps, steps=steps, batch_size=batch_size)
        rnd = X.deletion_insertion(model, xg, tg, X.random_maps(len(gpos), 32, 32, seed),
                                   steps=steps, batch_size=batch_size)
        faith[name] = {"n": int(len(gpos)),
                       "deletion_auc": float(np.mean(di["deletion_auc"])),
                       "insertion_auc": float(np.mean(di["insertion_auc"])),
                       "random_deletion_auc": float(np.mean(rnd["deletion_auc"])),
                       "random_insertion_auc": float(np.mean(rnd["insertion_auc"]))}
        curves[name] = (di, rnd)
        share = X.border_share(gmaps, border=BORDER)
        border[name] = float(np.nanmean(share)) if np.isfinite(share).any() else None
    border["uniform"] = float(X.border_area_fraction(32, 32, BORDER))
    result["faithfulness"] = faith
    result["border_share"] = border
    if "correct" in curves:
        figs["deletion_insertion"] = f"figures/deletion_insertion_{split}.png"
        X.plot_deletion_insertion(curves["correct"][0], run / figs["deletion_insertion"],
                                  random_result=curves["correct"][1])
    boxes = object_boxes(run, split, ds_idx[correct_pos]) if len(correct_pos) else None
    if boxes is not None:
        hits = X.pointing_game(groups["correct"][1], boxes)
        result["pointing_game"] = {"hit_rate": float(np.mean(hits)), "n": int(len(hits)),
                                   "on": "correctly classified images (generated data boxes)"}
    result["figures"] = figs
    analysis_index_update(run, f"explain_{split}", {"file": f"explanations_{split}.npz", **result})
    fa = faith.get("correct", {})
    log(f"explained {len(pos)} {split} images; Grad-CAM deletion AUC {fa.get('deletion_auc', float('nan')):.3f}"
        f" vs random {fa.get('random_deletion_auc', float('nan')):.3f} (lower is more faithful)"
        + (f"; pointing game {100 * result['pointing_game']['hit_rate']:.1f}%"
           if "pointing_game" in result else ""))
    return result


BORDER = X.DEFAULT_BORDER  # px: the outer ring of a 32x32 image (4 px = 43.75% of its pixels)


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
