"""The study's robustness (`cifarlens study --robustness`): every run's accuracy under the common
corruptions, each change compared with the baseline across seeds, a figure per change, and the
tracked failures' corrupted versions.

The runs' records are the robustness stage's (pipeline.ensure_robustness, in each run's
analysis phase); the tests and the corruption-error arithmetic are
`analysis.robustness.compare_arms`; this module puts them into the typed summary.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np

from cifarlens.analysis.corruptions import SEVERITIES
from cifarlens.analysis.robustness import CPU_IMAGES, compare_arms, corruption_errors
from cifarlens.errors import CifarlensError
from cifarlens.figures.robustness import plot_robustness
from cifarlens.runs import Run
from cifarlens.stages.robustness import (
    RobustnessRequest,
    current_robustness,
    images_under_corruption,
)
from cifarlens.study.schema import StudySummary, Variant, from_json
from cifarlens.study.schema_robustness import (
    FailureCorruption,
    RobustnessComparison,
    RobustnessSetup,
)
from cifarlens.training.runtime import resolve_device

NORMALISER = ("the baseline arm (AlexNet's errors, ImageNet-C's normaliser, are not available "
              "for these images)")


def add_robustness(summary: StudySummary, out: Path, plan: dict[str, Any],
                   runs: dict[str, dict[int, Run]], request: RobustnessRequest) -> None:
    """Fill `summary.robustness` (what was run, the baseline's numbers) and each variant's
    `robustness` (compare_arms across seeds), draw each change's figure (both arms, mean over
    seeds) into STUDY/figures/, and give each tracked failure its `corruption` counts."""
    seeds = plan["seeds"]
    recs = {arm: [_record(runs[arm][s], request) for s in seeds] for arm in runs}
    base = recs["baseline"]
    summary.robustness = setup_block(base)
    for i, var in enumerate(summary.variants):
        comp = compare_arms(base, recs[var.slug])
        var.robustness = from_json(RobustnessComparison, comp, "the robustness comparison")
        rel = f"figures/robustness{'' if i == 0 else '_' + var.slug}.png"
        label = "variant" if i == 0 else f"variant {var.slug}"
        plot_robustness({f"baseline (mean of {len(seeds)} seed{'s' * (len(seeds) != 1)})":
                         mean_record(base),
                         f"{label} (mean of {len(seeds)} seed{'s' * (len(seeds) != 1)})":
                         mean_record(recs[var.slug])}, out / rel)
        var.figures["robustness"] = rel
    track_under_corruption(summary.variants, runs, seeds[0], request)


def _record(run: Run, request: RobustnessRequest) -> dict[str, Any]:
    rec = current_robustness(run, request)
    if rec is None:
        raise CifarlensError(f"{run.path} has no robustness record for this study's request "
                             "(made from its best.pt now): rerun the study to make it")
    return rec


def setup_block(base: list[dict[str, Any]]) -> RobustnessSetup:
    """What every run was evaluated on (the records agree: compare_arms checks it), and the
    baseline arm's clean accuracy, accuracy under corruption and mCE, each a mean over seeds."""
    first = base[0]
    errs = [corruption_errors(r) for r in base]
    fams = list(errs[0]["family_accuracy"])
    return RobustnessSetup(
        source=first["source"], reference=first.get("reference", ""),
        corruptions=list(first["corruptions"]), held_out=list(first.get("held_out", {})),
        severities=[int(s) for s in first["severities"]], n_images=int(first["n_images"]),
        families=dict(first.get("families", {})), stand_ins=dict(first.get("stand_ins", {})),
        device=first.get("device"), normaliser=NORMALISER,
        baseline_clean=_mean([r["clean"] for r in base]),
        baseline_corruption_accuracy=_mean([e["corruption_accuracy"] for e in errs]),
        baseline_mce=_mean([e["mce"] for e in errs]),
        baseline_family_accuracy={f: _mean([e["family_accuracy"][f] for e in errs])
                                  for f in fams})


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def mean_record(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's records averaged over seeds, in a record's shape (what the figure draws)."""
    first = recs[0]

    def avg(key: str) -> dict[str, dict[str, float]]:
        return {n: {s: float(np.mean([r[key][n][s] for r in recs])) for s in t}
                for n, t in first.get(key, {}).items()}

    return {**{k: first[k] for k in ("severities", "n_images", "source")},
            "clean": float(np.mean([r["clean"] for r in recs])),
            "corruptions": avg("corruptions"), "held_out": avg("held_out")}


def track_under_corruption(variants: list[Variant], runs: dict[str, dict[int, Run]], seed: int,
                           request: RobustnessRequest) -> None:
    """Each tracked failure (the seed-`seed` baseline's) under every main corruption and
    severity, for the baseline and each variant of that seed. The images are evaluated here,
    seeded by their test index as the stage seeds them, because a CPU study's class-balanced
    subset holds only a few of them (500 of 10,000 test images)."""
    base_run = runs["baseline"][seed]
    tracked = {f.index for v in variants for f in v.failures.top}
    if not tracked:
        return
    fails = base_run.failures("test")["failures"]
    position = {f["index"]: f["position"] for f in fails if f["index"] in tracked}
    order = sorted(tracked)
    pos = np.array([position[i] for i in order])
    right_b = _right_under_corruption(images_under_corruption(base_run, pos, request))
    for v in variants:
        right_v = _right_under_corruption(images_under_corruption(runs[v.slug][seed], pos,
                                                                  request))
        for f in v.failures.top:
            k = order.index(f.index)
            f.corruption = FailureCorruption(conditions=int(right_b[1]),
                                             baseline_right=int(right_b[0][k]),
                                             variant_right=int(right_v[0][k]))


def _right_under_corruption(per_image: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Per image: how many corrupted versions are right, and of how many (clean left out)."""
    rows = [i for i, c in enumerate(per_image["conditions"]) if c != "clean"]
    correct = np.asarray(per_image["correct"], dtype=bool)[rows]
    return correct.sum(axis=0), len(rows)


def plan_line(request: RobustnessRequest, device: str, runs: int) -> str:
    """What --robustness adds, said with the study's plan before anything trains."""
    dev = resolve_device(device)
    plan = request.plan(dev)
    images = (f"{request.images:,} class-balanced" if request.images is not None else
              "all" if dev.type == "cuda" else f"{CPU_IMAGES:,} class-balanced")
    return (f"robustness: each of the {runs} runs also under {len(plan.corruptions)} corruptions"
            f" x {len(plan.severities)} severities on {images} test images "
            f"({len(plan.corruptions) * len(plan.severities) + 1} forward passes per image), "
            f"after its evaluation (docs/robustness.md, 'Cost')")


def robustness_args(request: RobustnessRequest | None) -> str:
    """The study command's robustness flags (appended to `plan.study_command`'s)."""
    if request is None:
        return ""
    parts = ["--robustness"]
    if request.images is not None:
        parts += ["--robustness-images", str(request.images)]
    if request.corruptions:
        parts += ["--robustness-corruptions", *request.corruptions]
    if tuple(request.severities) != SEVERITIES:
        parts += ["--robustness-severities", *map(str, request.severities)]
    return " " + shlex.join(parts)
