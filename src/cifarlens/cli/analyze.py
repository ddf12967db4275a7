"""`cifarlens evaluate`, `failures` and `explain`: the analyses of one run."""

from __future__ import annotations

import argparse

from cifarlens._defaults import CONFIDENT
from cifarlens.cli.args import (
    add_split_arg,
    add_threads_arg,
    finite_float,
    nonneg_int,
    positive_int,
)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from cifarlens.stages.evaluate import evaluate

    splits = ("val", "test") if a.split == "all" else (a.split,)
    evaluate(a.run, splits, checkpoint=a.checkpoint, data_dir=a.data_dir, device=a.device,
             progress=not a.no_progress)
    print(f"wrote predictions, metrics and figures to {a.run}")
    return 0


def cmd_failures(a: argparse.Namespace) -> int:
    from cifarlens.pipeline import ensure_evaluated
    from cifarlens.runs import Run
    from cifarlens.stages.failures import find_failures

    run = Run.open(a.run)
    ensure_evaluated(run, (a.split,), figures=(a.split,), progress=not a.no_progress)
    r = find_failures(run, a.split, top=a.top, confident=a.confident,
                      progress=not a.no_progress)
    if not a.no_neighbours:
        from cifarlens.stages.neighbours import add_neighbours

        add_neighbours(run, a.split, layer=a.feature_layer, progress=not a.no_progress)
    print(f"wrote {run.file(run.failures_name(a.split))} and {run.file(r['figures']['gallery'])}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from cifarlens.pipeline import ensure_evaluated, ensure_failures
    from cifarlens.runs import Run
    from cifarlens.stages.explain import ExplainOptions, check_indices, explain

    check_indices(a.run, a.split, a.indices)  # before evaluate writes anything
    run = Run.open(a.run)
    progress = not a.no_progress
    if a.indices or a.all:  # chosen images: predictions only
        ensure_evaluated(run, (a.split,), figures=(a.split,), progress=progress)
    else:  # the top failures are what a plain explain shows
        ensure_failures(run, a.split, progress=progress)
    r = explain(run, a.split, failures=a.failures, progress=progress,
                options=ExplainOptions(indices=a.indices, target=a.target, all_images=a.all,
                                       layer=a.layer))
    print(f"wrote {run.file(r['file'])} ({r['explained']} images)")  # ad-hoc: a tagged name
    return 0


def register(sub) -> None:
    """`evaluate`, `failures` and `explain`."""
    e = sub.add_parser("evaluate", help="predictions, metrics, calibration and figures of a run")
    e.add_argument("run", help="run folder made by `cifarlens train`")
    add_split_arg(e, ("val", "test", "all"), "all")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best: the epoch with the highest validation accuracy; last: the final one")
    e.add_argument("--data-dir", help="where the run's dataset is (default: as recorded)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: a CUDA GPU if there is one, else the CPU")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(e)
    e.set_defaults(func=cmd_evaluate)

    f = sub.add_parser("failures", help="rank wrong predictions by confidence; flag label errors")
    f.add_argument("run", help="run folder made by `cifarlens train` (evaluated first if needed)")
    add_split_arg(f)
    f.add_argument("--top", type=positive_int, default=12, help="images in the gallery")
    f.add_argument("--confident", type=finite_float, default=CONFIDENT,
                   help="temperature-scaled confidence above which an error counts as "
                        f"confident (default {CONFIDENT})")
    f.add_argument("--feature-layer", metavar="NAME",
                   help="module whose output is the feature space for each failure's nearest "
                        "training images, e.g. features.14 (default: the last Linear's input)")
    f.add_argument("--no-neighbours", action="store_true",
                   help="skip the nearest training images (no pass over the training split)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(f)
    f.set_defaults(func=cmd_failures)

    x = sub.add_parser("explain", help="Grad-CAM for failures (or chosen images) of a run")
    x.add_argument("run", help="run folder made by `cifarlens train` (evaluated, and its "
                               "failures found, first if needed)")
    add_split_arg(x)
    g = x.add_mutually_exclusive_group()
    g.add_argument("--failures", type=positive_int, default=12, metavar="K",
                   help="explain the K most confident failures (default 12)")
    g.add_argument("--indices", type=nonneg_int, nargs="+", metavar="I",
                   help="explain these dataset indices")
    g.add_argument("--all", action="store_true", help="explain every image of the split")
    x.add_argument("--target", choices=["predicted", "true", "both"], default="both",
                   help="explain the predicted class, the true class, or both")
    x.add_argument("--layer", "--cam-layer", dest="layer", metavar="NAME",
                   help="module to explain, e.g. features.20 (default: the last conv layer)")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(x)
    x.set_defaults(func=cmd_explain)
