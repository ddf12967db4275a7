"""The `cifarlens explain RUN` stage: Grad-CAM for a trained run, from its checkpoint and saved
predictions.

For each explained image: the map for the predicted class ("why it said X") and for the true
class ("where the evidence for Y was"), raw (not rescaled) in `explanations_<split>.npz`; a
figure for the failures; faithfulness (deletion/insertion of Grad-CAM against i.i.d. random
pixels, a smooth random map at the layer's resolution and a centre prior, with paired bootstrap
CIs over the images); the share of map mass near the image border, failures vs correct with a
permutation test; and on generated data, where the object's box is known, the pointing game.

The pieces live in their own modules: the method in `gradcam`, the measures in `cam_metrics`,
the figures in `cam_figures`. This module re-exports their public names, so the Python API
`from cifarlens.explain import gradcam, gradcam_pair, find_cam_layer` (and every other name this
module held before the split) keeps working.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cifarlens import _console as console
from cifarlens._io import locked
from cifarlens.cam.figures import plot_deletion_insertion, plot_explanations
from cifarlens.cam.gradcam import (
    find_cam_layer,
    gradcam,
    gradcam_pair,
    layer_name,
    resolve_layer,
)
from cifarlens.cam.quality import (
    BASELINE_NAMES,
    BORDER,
    border_share,
    border_summary,
    faithfulness,
    pointing_game,
)
from cifarlens.data.dataset import CifarData
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run

__all__ = ["DEFAULT_OPTIONS", "TARGETS", "adhoc_tag", "check_indices", "explain_run", "object_boxes"]

TARGETS = ("predicted", "true", "both")

# The options that change what the default explanation holds (batch_size does not: batched and
# unbatched maps are equal). A run's default is the one studies embed.
DEFAULT_OPTIONS = {"failures": 12, "steps": 16, "correct_sample": 200, "seed": 0}
_OPTION_TAGS = {"failures": "top", "steps": "steps", "correct_sample": "sample", "seed": "seed"}


def adhoc_tag(*, indices: Sequence[int] | None = None, all_images: bool = False,
              target: str = "both", layer: str | None = None,
              options: dict[str, int] | None = None,
              reference: dict[str, int] | None = None) -> str:
    """The file-name tag of an ad-hoc explanation: one part per option that differs from
    `reference` (default: DEFAULT_OPTIONS), e.g. `idx-3-17`, `top6`,
    `layer-features.10_target-true`. `layer` is a non-default layer's name. Empty for the
    default itself. The same options always give the same tag, so a rerun replaces its own files
    and never another analysis's."""
    parts = []
    if indices:
        idx = [int(i) for i in indices]
        digest = hashlib.sha1(",".join(map(str, idx)).encode()).hexdigest()[:8]
        parts.append("idx-" + "-".join(map(str, idx)) if len(idx) <= 4
                     else f"idx{len(idx)}-{digest}")
    elif all_images:
        parts.append("all")
    ref = {**DEFAULT_OPTIONS, **(reference or {})}
    for key, value in (options or {}).items():
        if key == "failures" and (indices or all_images):
            continue  # the count only chooses failures, and these runs do not choose by it
        if key in _OPTION_TAGS and int(value) != int(ref[key]):
            parts.append(f"{_OPTION_TAGS[key]}{int(value)}")
    if layer is not None:
        parts.append("layer-" + re.sub(r"[^A-Za-z0-9.-]+", "-", layer).strip("-"))
    if target != "both":
        parts.append(f"target-{target}")
    return "_".join(parts)


def check_indices(run: Run | str | os.PathLike, split: str, indices: Sequence[int] | None
                  ) -> None:
    """Refuse dataset indices that are not in the run's split, before anything is written
    (the CLI calls this before it evaluates a run for explain)."""
    if indices:
        ds_idx = Run.open(run).split_arrays(split)[2]
        missing = sorted(set(indices) - set(ds_idx.tolist()))
        if missing:
            raise CifarlensError(f"indices not in the {split} split: {missing[:5]}")


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """The stage's one bar, in forward-pass units, shown once the work has taken 3 s."""
    return console.progress(total, desc, enabled, delay=3.0, mininterval=1.0,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")


def object_boxes(data: CifarData, split: str, indices: np.ndarray) -> np.ndarray | None:
    """Object boxes of generated data (None for real CIFAR, which has none), from the manifest
    the data was read and verified with (no second read of the dataset)."""
    if data.source != "generated":
        return None
    info = data.extra.get("manifest")
    if info is None:
        from cifarlens.data.synth import read_synth_info

        info = read_synth_info(data.folder, verify=False)
    boxes = np.asarray(info["boxes"]["test" if split == "test" else "train"])
    return boxes[indices]


@locked
def explain_run(run: Run | str | os.PathLike, split: str = "test", *, failures: int = 12,
                indices: list[int] | None = None, target: str = "both", all_images: bool = False,
                correct_sample: int = 200, steps: int = 16, seed: int = 0, batch_size: int = 256,
                layer: str | None = None, log=console.log, progress: bool = True) -> dict[str, Any]:
    """Explain a run's `split` with Grad-CAM of its best checkpoint (see the module docstring).

    Writes `explanations_<split>.npz`, `figures/gradcam_<split>.png`,
    `figures/deletion_insertion_<split>.png` and `analysis.json["explain_<split>"]` (with the
    `options` that made them): the run's default explanation, the one a study embeds. It is set
    by the first plain explain of the run (no indices, not all images, both targets, the default
    layer) and replaced only by one with the same failures/steps/correct_sample/seed, or when it
    is stale (another checkpoint). Anything else is ad hoc and goes under a tag from its options
    (`adhoc_tag`): `explanations_<split>_<tag>.npz`, `figures/gradcam_<split>_<tag>.png`, ...,
    `analysis.json["explain_<split>_<tag>"]`; the tag is logged and returned as `result["tag"]`
    (None for the default) beside `result["file"]`. `progress`: a bar with an ETA on stderr
    (shown after a few seconds, removed when done).
    """
    run = Run.open(run)
    if target not in TARGETS:
        raise CifarlensError(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")
    data = run.data()
    images, labels, ds_idx = run.split_arrays(split, data)
    check_indices(run, split, indices)
    # the maps below come from best.pt: the predictions (and failures) must come from it too
    p = run.current_predictions(split)
    fails = None
    if not indices and not all_images:
        fails = run.current_failures(split)
        if fails is None:
            raise CifarlensError(f"no failures of the current best.pt for split {split!r} in "
                                 f"{run}: run `cifarlens failures {run} --split {split}` first")
    model = run.model("best")
    cam_layer = resolve_layer(model, layer)

    # Ad-hoc analyses never replace the default files a study embeds: options that differ from
    # the run's default (its first plain explain, e.g. the study's) go under a tag.
    options = {"failures": int(failures), "steps": int(steps),
               "correct_sample": int(correct_sample), "seed": int(seed)}
    other_layer = (layer_name(model, cam_layer)
                   if cam_layer is not find_cam_layer(model) else None)
    plain = not indices and not all_images and target == "both" and other_layer is None
    current = run.current_explanation(split)
    reference = current.get("options", DEFAULT_OPTIONS) if current else None
    tag = ""
    if not (plain and reference in (None, options)):
        how = {"indices": indices, "all_images": all_images, "target": target,
               "layer": other_layer, "options": options}
        # named against the CLI's defaults, so the same options give the same tag on every
        # run; against the run's default only where that is all that differs (`top12` beside
        # a study's `--top 6`)
        tag = adhoc_tag(**how) or adhoc_tag(**how, reference=reference)
    suffix = f"_{tag}" if tag else ""

    def normalized(pos: np.ndarray) -> torch.Tensor:
        return run.normalize(images[pos])

    # Which images: every one, chosen dataset indices, or the top-K confident failures.
    if all_images:
        pos = np.arange(len(labels))
    elif indices:
        where = {int(i): k for k, i in enumerate(ds_idx)}  # all present: check_indices above
        pos = np.array([where[i] for i in indices])
    else:
        pos = np.array([f["position"] for f in fails["failures"][:failures]], dtype=np.int64)
        if len(pos) == 0:  # a model with no errors: its correct sample is still explained
            log(f"note: no failures in the {split} split; explaining the correct sample only")
    pred, true = p["pred"][pos], labels[pos]
    is_fail = pred != true
    # Faithfulness and background reliance: failures vs a seeded sample of correct predictions.
    rng = np.random.default_rng(seed)
    correct_pos = np.flatnonzero(p["pred"] == labels)
    correct_pos = np.sort(rng.choice(correct_pos, min(correct_sample, len(correct_pos)),
                                     replace=False)) if len(correct_pos) else correct_pos
    fail_pos = pos[is_fail] if target != "true" else np.array([], dtype=np.int64)

    # One bar for the stage, in forward-pass units so its ETA holds: a Grad-CAM pair costs
    # about 3 (a forward, two partial backwards), a single map 2, and each image's faithfulness
    # 2 (steps + 1) forwards for each of the 4 maps.
    di = 2 * (steps + 1)
    bar = _progress_bar(3 * len(pos) + 2 * len(correct_pos)
                        + 4 * di * (len(fail_pos) + len(correct_pos)), f"explain {split}",
                        progress)
    try:
        maps_pred, maps_true = gradcam_pair(model, normalized(pos), torch.from_numpy(pred),
                                            torch.from_numpy(true), cam_layer,
                                            batch_size=batch_size,
                                            progress=lambda k: bar.update(3 * k))
        if target == "predicted":
            maps_true = None
        elif target == "true":
            maps_pred = None
        result: dict[str, Any] = {"split": split, "explained": int(len(pos)),
                                  "layer": layer_name(model, cam_layer), "target": target}
        groups = {}
        if len(fail_pos):
            groups["failures"] = (fail_pos, maps_pred[is_fail])
        if len(correct_pos):
            mc = gradcam(model, normalized(correct_pos), torch.from_numpy(p["pred"][correct_pos]),
                         cam_layer, batch_size=batch_size, progress=lambda k: bar.update(2 * k))
            groups["correct"] = (correct_pos, mc)
        faith: dict[str, Any] = {}
        curves = {}
        shares: dict[str, np.ndarray] = {}
        cells = None
        for name, (gpos, gmaps) in groups.items():
            xg, tg = normalized(gpos), torch.from_numpy(p["pred"][gpos])
            if cells is None:  # the explained layer's resolution, for the smooth random baseline
                cells = tuple(gradcam(model, xg[:1], tg[:1], cam_layer,
                                      upsample=False).shape[-2:])
            faith[name], curves[name] = faithfulness(
                model, xg, tg, gmaps, cells, steps=steps, batch_size=batch_size, seed=seed,
                progress=lambda k: bar.update(di * k))
            shares[name] = border_share(gmaps, border=BORDER)
    finally:
        bar.close()
    result["faithfulness"] = faith
    result["border_share"] = border_summary(shares, cells or (32, 32), seed=seed)

    # Written only now, when every number is in: a failed run leaves the old files as they were.
    arrays = {"positions": pos, "indices": ds_idx[pos], "pred": pred, "true": true}
    if maps_pred is not None:
        arrays["maps_pred"] = maps_pred.numpy().astype(np.float32)
    if maps_true is not None:
        arrays["maps_true"] = maps_true.numpy().astype(np.float32)
    npz_name = run.write_explanations(split, tag, arrays)
    figs: dict[str, str] = {}
    show = np.flatnonzero(is_fail)[:12] if is_fail.any() else np.arange(min(12, len(pos)))
    if len(show) and maps_pred is not None and maps_true is not None:
        figs["gradcam"] = Run.figure_name(f"gradcam_{split}{suffix}")
        conf = p["confidence"][pos[show]]
        plot_explanations(images[pos[show]].transpose(0, 2, 3, 1), maps_pred[show],
                          maps_true[show],
                          [f"image {int(i)}" for i in ds_idx[pos[show]]], run.file(figs["gradcam"]),
                          pred_names=[data.class_names[c] for c in pred[show]],
                          true_names=[data.class_names[c] for c in true[show]],
                          confidences=[float(c) for c in conf])
    if "correct" in curves:
        figs["deletion_insertion"] = Run.figure_name(f"deletion_insertion_{split}{suffix}")
        c = curves["correct"]
        plot_deletion_insertion(c["gradcam"], run.file(figs["deletion_insertion"]),
                                random_result=c["random"],
                                baselines={BASELINE_NAMES[k]: c[k]
                                           for k in ("smooth_random", "centre_prior")})
    boxes = object_boxes(data, split, ds_idx[correct_pos]) if len(correct_pos) else None
    if boxes is not None:
        hits = pointing_game(groups["correct"][1], boxes)
        result["pointing_game"] = {"hit_rate": float(np.mean(hits)), "n": int(len(hits)),
                                   "on": "correctly classified images (generated data boxes)"}
    result["figures"] = figs
    result["file"] = npz_name
    result["tag"] = tag or None
    run.record(f"explain_{split}{suffix}", {
        "checkpoint_sha256": str(p["checkpoint_sha256"]), "options": options, **result})
    fa = faith.get("correct", {})
    if tag:
        log(f"ad-hoc options: wrote {npz_name} and figures tagged '{tag}' "
            f"(analysis.json key explain_{split}{suffix}); the run's default explanation "
            f"({Run.explanations_name(split)}, the one a study embeds) is unchanged")
    log(f"explained {len(pos)} {split} images; Grad-CAM deletion AUC {fa.get('deletion_auc', float('nan')):.3f}"
        f" vs random {fa.get('random_deletion_auc', float('nan')):.3f} (lower is more faithful)"
        + (f"; pointing game {100 * result['pointing_game']['hit_rate']:.1f}%"
           if "pointing_game" in result else ""))
    return result

