"""`cifarlens robustness RUN`: the run's accuracy under the common corruptions, written through
`Run` as robustness_<split>.json, .csv and .npz (per-image correctness) and a figure.

The images, the corruptions and the arithmetic are analysis/robustness.py's; this stage picks
the images for the device (docs/robustness.md, "Cost"), runs them with a progress bar, and
writes what came out.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from cifarlens import _console as console
from cifarlens._io import locked
from cifarlens.analysis import robustness as R
from cifarlens.analysis.corruptions import ALL, HELD_OUT
from cifarlens.csvfile import csv_text
from cifarlens.errors import CifarlensError
from cifarlens.figures.robustness import plot_robustness
from cifarlens.runs import Run, load_npz
from cifarlens.training.runtime import resolve_device

CSV_HEADER = ("corruption", "family", "held_out", "severity", "accuracy", "error", "n_images",
              "source")


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
    model = run.model().to(dev)
    total = plan.forward_passes(len(pos))
    log(f"robustness ({split}): {len(pos):,} images x {len(plan.corruptions)} corruptions x "
        f"{len(plan.severities)} severities = {total:,} forward passes on {dev}")
    with console.progress(total, f"robustness ({split})", progress, unit="img") as bar:
        rec = R.corruption_accuracy(model, x[pos], y[pos], idx[pos], run.norm, plan=plan,
                                    device=dev, progress=bar.update)
    per_image = R.pack_per_image(rec.pop("per_image"))
    rec.update(split=split, device=str(dev), checkpoint_sha256=run.checkpoint_sha256())
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
