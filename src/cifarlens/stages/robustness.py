"""`cifarlens robustness RUN`: the run's accuracy under the common corruptions, written through
`Run` as robustness_<split>.json, .csv and .npz (per-image correctness) and a figure.

The corruptions and the arithmetic are analysis/robustness.py's; this stage picks the images
for the device (docs/robustness.md, "Cost"), runs the run's best checkpoint over them with a
progress bar, and writes what came out. A study asks every run for the same
`RobustnessRequest` (pipeline.ensure_robustness), so its arms and seeds are compared on the
same images, corruptions and severities.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cifarlens import _console as console
from cifarlens._io import locked
from cifarlens.analysis import robustness as R
from cifarlens.analysis.corruptions import ALL, HELD_OUT, SEVERITIES, SOURCE_NOTE
from cifarlens.csvfile import csv_text
from cifarlens.errors import CifarlensError
from cifarlens.figures.robustness import plot_robustness
from cifarlens.runs import Run, load_npz
from cifarlens.training.runtime import infer_logits, resolve_device, resolve_precision

CSV_HEADER = ("corruption", "family", "held_out", "severity", "accuracy", "error", "n_images",
              "source")
# The device's fast precision (bf16 where the CPU or GPU has it), not evaluate's fp32: the 76
# forward passes per image are most of the stage's time, and bf16 halves them on this CPU
# (vgg, 500 images: 8.3-8.8 ms per image against 15-18 in fp32, measured under load 8). Every
# run of a study uses the same, so the arms compare alike; the clean accuracy recorded here can
# differ from evaluate's in the last images.
PRECISION = "auto"


@dataclass(frozen=True)
class RobustnessRequest:
    """What a study asks of each of its runs (picklable: it travels in a RunJob). None: the
    device's default (docs/robustness.md, "Cost": 500 class-balanced test images and the 15
    corruptions on a CPU; every test image and the 4 held out too on a GPU)."""

    images: int | None = None
    corruptions: tuple[str, ...] | None = None
    severities: tuple[int, ...] = SEVERITIES

    def plan(self, device: torch.device | str) -> R.RobustnessPlan:
        plan = R.default_plan(device)
        if self.corruptions:
            plan = dataclasses.replace(plan, corruptions=tuple(dict.fromkeys(self.corruptions)))
        plan = dataclasses.replace(plan, severities=tuple(sorted(set(self.severities))))
        plan.check()
        return plan


def robustness_csv(rec: dict[str, Any]) -> str:
    """One row per condition (the clean images as severity 0), accuracies as fractions."""
    rows = [("clean", "", 0, 0, rec["clean"], 1 - rec["clean"], rec["n_images"], rec["source"])]
    for table in (rec["corruptions"], rec["held_out"]):
        for name, accs in table.items():
            for s, acc in accs.items():
                rows.append((name, ALL[name].family, int(name in HELD_OUT), int(s), acc, 1 - acc,
                             rec["n_images"], rec["source"]))
    return csv_text(CSV_HEADER, rows)


def choose_images(labels: np.ndarray, device: torch.device, images: int | None) -> np.ndarray:
    """Positions in the split to corrupt: the device's default, or a class-balanced `images`
    (all of them when it is at least their number)."""
    if images is None:
        return R.default_images(labels, device)
    if images >= len(labels):
        return np.arange(len(labels))
    return R.balanced_subset(labels, images)


def _predictor(run: Run, device: torch.device, batch_size: int) -> R.Predict:
    model = run.model().to(device)
    precision = resolve_precision(PRECISION, device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return infer_logits(model, x, run.norm["mean"], run.norm["std"], device=device,
                            precision=precision, batch_size=batch_size).argmax(1)

    return predict


@locked
def run_robustness(run: Run | str | os.PathLike, split: str = "test", *,
                   plan: R.RobustnessPlan | None = None, images: int | None = None,
                   corruptions_dir: str | os.PathLike | None = None, device: str = "auto",
                   progress: bool = False, log=None) -> dict[str, Any]:
    """Evaluate the run's best checkpoint under the corruptions of `plan` (default: the device's,
    `robustness.default_plan`) on `images` class-balanced images of `split` (default: the
    device's), or on the published files in `corruptions_dir`; write the outputs through Run
    and record them in analysis.json. Returns the record (without the per-image array)."""
    log = log or console.log
    run = Run.open(run)
    dev = resolve_device(device)
    plan = plan or R.default_plan(dev)
    if corruptions_dir is not None:
        if split != "test":
            raise CifarlensError("--corruptions-dir holds corrupted test images: use --split test")
        plan = dataclasses.replace(plan, published=R.read_published(corruptions_dir,
                                                                     plan.corruptions))
    plan.check()
    x, y, idx = run.split_arrays(split)
    pos = choose_images(y, dev, images)
    total = plan.forward_passes(len(pos))
    log(f"robustness ({split}): {len(pos):,} images x {len(plan.corruptions)} corruptions x "
        f"{len(plan.severities)} severities = {total:,} forward passes on {dev}")
    with console.progress(total, f"robustness ({split})", progress, unit="img") as bar:
        rec = R.corruption_accuracy(_predictor(run, dev, plan.batch_size), x[pos], y[pos],
                                    idx[pos], plan=plan, device=dev, progress=bar.update)
    per_image = R.pack_per_image(rec.pop("per_image"))
    rec.update(split=split, device=str(dev), precision=resolve_precision(PRECISION, dev),
               checkpoint_sha256=run.checkpoint_sha256())
    figure = Run.figure_name(f"robustness_{split}")
    plot_robustness({run.name: rec}, run.file(figure))
    rec["figures"] = {"severity": figure}
    run.write_robustness(split, rec, robustness_csv(rec), per_image)
    s = rec["summary"]
    run.record(f"robustness_{split}", {
        "file": Run.robustness_name(split), "figures": rec["figures"],
        "checkpoint_sha256": rec["checkpoint_sha256"],
        "numbers": {"clean": rec["clean"], "mce": s["mce"], "relative_mce": s["relative_mce"],
                    "corruption_accuracy": s["corruption_accuracy"],
                    "n_images": rec["n_images"], "source": rec["source"]}})
    log(f"{split}: clean {rec['clean']:.1%}, under corruption {s['corruption_accuracy']:.1%} "
        f"(mCE {s['mce']:.1%}, relative mCE {s['relative_mce']:.1%}) on {rec['n_images']:,} "
        f"images; {rec['source']}")
    return rec


def read_per_image(run: Run | str | os.PathLike, split: str = "test") -> dict[str, Any]:
    """The per-image correctness a robustness stage wrote: conditions and a bool array."""
    r = Run.of(run)
    return R.unpack_per_image(load_npz(r.file(Run.robustness_name(split, "npz")),
                                       "robustness file"))


# --- what a study asks of a run ------------------------------------------------------------------


def current_robustness(run: Run | str | os.PathLike, request: RobustnessRequest,
                       device: str = "auto") -> dict[str, Any] | None:
    """The run's robustness_test.json if it was made from its best.pt now (`Run.current`),
    computed locally, on the images, corruptions and severities `request` asks for on `device`;
    else None (an earlier `cifarlens robustness RUN --images 200` does not stand in for a
    study's 500)."""
    run = Run.of(run)
    rec = run.current("robustness", "test")
    if rec is None:
        return None
    dev = resolve_device(device)
    plan = request.plan(dev)
    _, y, idx = run.split_arrays("test")
    idx = idx[choose_images(y, dev, request.images)]
    same = (rec.get("source") == SOURCE_NOTE
            and set(rec.get("corruptions", {})) | set(rec.get("held_out", {}))
            == set(plan.corruptions)
            and rec.get("severities") == list(plan.severities)
            and rec.get("indices") == idx.tolist())
    return rec if same else None


def images_under_corruption(run: Run | str | os.PathLike, positions: np.ndarray,
                            request: RobustnessRequest, device: str = "auto") -> dict[str, Any]:
    """Per-image correctness of the run's best checkpoint on the test images at `positions`,
    clean and under the main corruptions of `request` (held-out ones left out: the mCE's
    corruptions only). Each image is corrupted as the stage corrupts it (seeded by its test
    index), so these rows equal robustness_test.npz's for images the stage also ran; nothing is
    written. Returns {"conditions": [...], "correct": (conditions, images) bool array}."""
    run = Run.of(run)
    dev = resolve_device(device)
    plan = request.plan(dev)
    plan = dataclasses.replace(plan, corruptions=tuple(n for n in plan.corruptions
                                                       if n not in HELD_OUT))
    x, y, idx = run.split_arrays("test")
    pos = np.asarray(positions, dtype=np.int64)
    rec = R.corruption_accuracy(_predictor(run, dev, plan.batch_size), x[pos], y[pos], idx[pos],
                                plan=plan, device=dev)
    return rec["per_image"]
