"""The `cifarlens explain RUN` stage: Grad-CAM for a trained run, from its checkpoint and saved
predictions.

For each explained image: the map for the predicted class ("why it said X") and for the true
class ("where the evidence for Y was"), raw (not rescaled) in `explanations_<split>.npz`; a
figure for the failures; faithfulness (deletion/insertion of Grad-CAM against i.i.d. random
pixels, a smooth random map at the layer's resolution, a centre prior and another image's map of
the same class, with paired bootstrap CIs over the images); the share of map mass near the
image border, failures vs correct with a
permutation test; and on generated data, where the object's box is known, the pointing game.

The pieces live in their own modules: the method in `cam.gradcam`, the measures in
`cam.quality`, the figures in `cam.figures`; this stage chooses the images, runs them and writes
the run's files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
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
    FaithfulnessSettings,
    border_share,
    border_summary,
    faithfulness,
    pointing_game,
)
from cifarlens.data.dataset import CifarData
from cifarlens.data.synth import read_synth_info
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run

__all__ = ["DEFAULT_OPTIONS", "TARGETS", "ExplainOptions", "adhoc_tag", "check_indices",
           "explain", "object_boxes"]

TARGETS = ("predicted", "true", "both")

# The options that change what the default explanation holds (batch_size does not: batched and
# unbatched maps are equal). A run's default is the one studies embed.
DEFAULT_OPTIONS = {"failures": 12, "steps": 16, "correct_sample": 200, "seed": 0}
_OPTION_TAGS = {"failures": "top", "steps": "steps", "correct_sample": "sample", "seed": "seed"}


@dataclass(frozen=True)
class ExplainOptions:
    """What `explain` explains besides the top failures, and how.

    indices: explain these dataset indices instead; all_images: every image of the split;
    target: "predicted", "true" or "both" classes; layer: a module name (default: the last
    conv layer); correct_sample: correctly classified images for the faithfulness and border
    references; steps: deletion/insertion steps; seed: the sample's and baselines' seed;
    batch_size: images per forward pass (the maps do not depend on it)."""

    indices: Sequence[int] | None = None
    all_images: bool = False
    target: str = "both"
    layer: str | None = None
    correct_sample: int = 200
    steps: int = 16
    seed: int = 0
    batch_size: int = 256


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
        info = read_synth_info(data.folder, verify=False)
    boxes = np.asarray(info["boxes"]["test" if split == "test" else "train"])
    return boxes[indices]


@locked
def explain(run: Run | str | os.PathLike, split: str = "test", *, failures: int = 12,
            options: ExplainOptions | None = None, log=console.log,
            progress: bool = True) -> dict[str, Any]:
    """Explain a run's `split` with Grad-CAM of its best checkpoint (see the module docstring):
    its `failures` most confident failures, or what `options` chooses.

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
    o = options or ExplainOptions()
    run = Run.open(run)
    if o.target not in TARGETS:
        raise CifarlensError(f"unknown target {o.target!r}; choose from: {', '.join(TARGETS)}")
    job = _Job(run, split, failures, o)
    result, faith, curves, groups = _explain_images(job, progress, log)
    _write(job, result, curves, groups)
    fa = faith.get("correct", {})
    if job.tag:
        log(f"ad-hoc options: wrote {result['file']} and figures tagged '{job.tag}' "
            f"(analysis.json key explain_{split}_{job.tag}); the run's default explanation "
            f"({Run.explanations_name(split)}, the one a study embeds) is unchanged")
    log(f"explained {len(job.pos)} {split} images; Grad-CAM deletion AUC "
        f"{fa.get('deletion_auc', float('nan')):.3f} vs random "
        f"{fa.get('random_deletion_auc', float('nan')):.3f} (lower is more faithful)"
        + (f"; pointing game {100 * result['pointing_game']['hit_rate']:.1f}%"
           if "pointing_game" in result else ""))
    return result


class _Job:
    """One explanation's inputs: the run's data, predictions and model, the chosen images, the
    reference sample of correct predictions, and the tag its options file under."""

    def __init__(self, run: Run, split: str, failures: int, o: ExplainOptions) -> None:
        self.run, self.split, self.o = run, split, o
        self.data = run.data()
        self.images, self.labels, self.ds_idx = run.split_arrays(split, self.data)
        check_indices(run, split, o.indices)
        # the maps below come from best.pt: the predictions (and failures) must come from it too
        self.p = p = run.require_current("predictions", split)
        fails = None
        if not o.indices and not o.all_images:
            fails = run.current("failures", split)
            if fails is None:
                raise CifarlensError(f"no failures of the current best.pt for split {split!r} "
                                     f"in {run}: run `cifarlens failures {run} --split {split}` "
                                     "first")
        self.model = run.model("best")
        self.layer = resolve_layer(self.model, o.layer)
        self.options = {"failures": int(failures), "steps": int(o.steps),
                        "correct_sample": int(o.correct_sample), "seed": int(o.seed)}
        self.tag = self._tag()
        # Which images: every one, chosen dataset indices, or the top-K confident failures.
        if o.all_images:
            self.pos = np.arange(len(self.labels))
        elif o.indices:
            where = {int(i): k for k, i in enumerate(self.ds_idx)}  # all present: checked
            self.pos = np.array([where[i] for i in o.indices])
        else:
            self.pos = np.array([f["position"] for f in fails["failures"][:failures]],
                                dtype=np.int64)
        self.pred, self.true = p["pred"][self.pos], self.labels[self.pos]
        self.is_fail = self.pred != self.true
        # Faithfulness and background reliance: failures vs a seeded sample of correct ones.
        rng = np.random.default_rng(o.seed)
        correct = np.flatnonzero(p["pred"] == self.labels)
        self.correct_pos = np.sort(rng.choice(correct, min(o.correct_sample, len(correct)),
                                              replace=False)) if len(correct) else correct
        self.fail_pos = self.pos[self.is_fail] if o.target != "true" \
            else np.array([], dtype=np.int64)

    def _tag(self) -> str:
        """Ad-hoc analyses never replace the default files a study embeds: options that differ
        from the run's default (its first plain explain, e.g. the study's) go under a tag."""
        o = self.o
        other_layer = (layer_name(self.model, self.layer)
                       if self.layer is not find_cam_layer(self.model) else None)
        plain = not o.indices and not o.all_images and o.target == "both" and other_layer is None
        current = self.run.current("explanation", self.split)
        reference = current.get("options", DEFAULT_OPTIONS) if current else None
        if plain and reference in (None, self.options):
            return ""
        how = {"indices": o.indices, "all_images": o.all_images, "target": o.target,
               "layer": other_layer, "options": self.options}
        # named against the CLI's defaults, so the same options give the same tag on every
        # run; against the run's default only where that is all that differs (`top12` beside
        # a study's `--top 6`)
        return adhoc_tag(**how) or adhoc_tag(**how, reference=reference)

    def normalized(self, pos: np.ndarray) -> torch.Tensor:
        return self.run.normalize(self.images[pos])


def _explain_images(job: _Job, progress: bool, log) -> tuple[dict, dict, dict, dict]:
    """The maps of the chosen images, and faithfulness and border share of the failures and
    the correct sample."""
    o, p = job.o, job.p
    if not o.indices and not o.all_images and len(job.pos) == 0:
        log(f"note: no failures in the {job.split} split; explaining the correct sample only")
    # One bar for the stage, in forward-pass units so its ETA holds: a Grad-CAM pair costs
    # about 3 (a forward, two partial backwards), a single map 2, and each image's faithfulness
    # 2 (steps + 1) forwards for each of the 5 maps (Grad-CAM and its 4 references).
    di = 2 * (o.steps + 1)
    bar = _progress_bar(3 * len(job.pos) + 2 * len(job.correct_pos)
                        + 5 * di * (len(job.fail_pos) + len(job.correct_pos)),
                        f"explain {job.split}", progress)
    try:
        maps_pred, maps_true = gradcam_pair(job.model, job.normalized(job.pos),
                                            torch.from_numpy(job.pred), torch.from_numpy(job.true),
                                            job.layer, batch_size=o.batch_size,
                                            progress=lambda k: bar.update(3 * k))
        job.maps_pred = None if o.target == "true" else maps_pred
        job.maps_true = None if o.target == "predicted" else maps_true
        result: dict[str, Any] = {"split": job.split, "explained": int(len(job.pos)),
                                  "layer": layer_name(job.model, job.layer), "target": o.target}
        groups = {}
        if len(job.fail_pos):
            groups["failures"] = (job.fail_pos, job.maps_pred[job.is_fail])
        if len(job.correct_pos):
            mc = gradcam(job.model, job.normalized(job.correct_pos),
                         torch.from_numpy(p["pred"][job.correct_pos]), job.layer,
                         batch_size=o.batch_size, progress=lambda k: bar.update(2 * k))
            groups["correct"] = (job.correct_pos, mc)
        faith: dict[str, Any] = {}
        curves = {}
        shares: dict[str, np.ndarray] = {}
        cells = None
        for name, (gpos, gmaps) in groups.items():
            xg, tg = job.normalized(gpos), torch.from_numpy(p["pred"][gpos])
            if cells is None:  # the explained layer's resolution, for the smooth random baseline
                cells = tuple(gradcam(job.model, xg[:1], tg[:1], job.layer,
                                      upsample=False).shape[-2:])
            faith[name], curves[name] = faithfulness(
                job.model, xg, tg, gmaps, cells,
                FaithfulnessSettings(steps=o.steps, batch_size=o.batch_size, seed=o.seed),
                progress=lambda k: bar.update(di * k))
            shares[name] = border_share(gmaps, border=BORDER)
    finally:
        bar.close()
    result["faithfulness"] = faith
    result["border_share"] = border_summary(shares, cells or (32, 32), seed=o.seed)
    return result, faith, curves, groups


def _write(job: _Job, result: dict[str, Any], curves: dict, groups: dict) -> None:
    """The npz, the figures and the analysis record: written only now, when every number is in
    (a failed run leaves the old files as they were)."""
    run, split, p, data = job.run, job.split, job.p, job.data
    suffix = f"_{job.tag}" if job.tag else ""
    arrays = {"positions": job.pos, "indices": job.ds_idx[job.pos], "pred": job.pred,
              "true": job.true}
    if job.maps_pred is not None:
        arrays["maps_pred"] = job.maps_pred.numpy().astype(np.float32)
    if job.maps_true is not None:
        arrays["maps_true"] = job.maps_true.numpy().astype(np.float32)
    npz_name = run.write_explanations(split, job.tag, arrays)
    figs: dict[str, str] = {}
    show = np.flatnonzero(job.is_fail)[:12] if job.is_fail.any() \
        else np.arange(min(12, len(job.pos)))
    if len(show) and job.maps_pred is not None and job.maps_true is not None:
        figs["gradcam"] = Run.figure_name(f"gradcam_{split}{suffix}")
        shown = job.pos[show]
        plot_explanations(job.images[shown].transpose(0, 2, 3, 1), job.maps_pred[show],
                          job.maps_true[show], [f"image {int(i)}" for i in job.ds_idx[shown]],
                          run.file(figs["gradcam"]),
                          pred_names=[data.class_names[c] for c in job.pred[show]],
                          true_names=[data.class_names[c] for c in job.true[show]],
                          confidences=[float(c) for c in p["confidence"][shown]])
    if "correct" in curves:
        figs["deletion_insertion"] = Run.figure_name(f"deletion_insertion_{split}{suffix}")
        c = curves["correct"]
        plot_deletion_insertion(c["gradcam"], run.file(figs["deletion_insertion"]),
                                random_result=c["random"],
                                baselines={BASELINE_NAMES[k]: c[k]
                                           for k in ("smooth_random", "centre_prior")})
    boxes = (object_boxes(data, split, job.ds_idx[job.correct_pos])
             if len(job.correct_pos) else None)
    if boxes is not None:
        hits = pointing_game(groups["correct"][1], boxes)
        result["pointing_game"] = {"hit_rate": float(np.mean(hits)), "n": int(len(hits)),
                                   "on": "correctly classified images (generated data boxes)"}
    result["figures"] = figs
    result["file"] = npz_name
    result["tag"] = job.tag or None
    run.record(f"explain_{split}{suffix}", {
        "checkpoint_sha256": str(p["checkpoint_sha256"]), "options": job.options, **result})
