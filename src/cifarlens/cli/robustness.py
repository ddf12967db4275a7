"""`cifarlens robustness`: a run's accuracy under the common corruptions (CIFAR-C definitions)."""

from __future__ import annotations

import argparse

from cifarlens.cli.args import add_split_arg, add_threads_arg, int_range, positive_int


def cmd_robustness(a: argparse.Namespace) -> int:
    import dataclasses

    from cifarlens.analysis.robustness import default_plan
    from cifarlens.runs import Run
    from cifarlens.stages.robustness import run_robustness
    from cifarlens.training.runtime import resolve_device

    plan = default_plan(resolve_device(a.device), held_out=a.held_out or None)
    if a.corruptions:
        plan = dataclasses.replace(plan, corruptions=tuple(dict.fromkeys(a.corruptions)))
    if a.severities:
        plan = dataclasses.replace(plan, severities=tuple(sorted(set(a.severities))))
    plan = dataclasses.replace(plan, batch_size=a.batch_size)
    rec = run_robustness(a.run, a.split, plan=plan, images=a.images,
                         corruptions_dir=a.corruptions_dir, device=a.device,
                         progress=not a.no_progress)
    r = Run(a.run)
    print(f"wrote {r.file(Run.robustness_name(a.split))}, its .csv and .npz, and "
          f"{r.file(rec['figures']['severity'])}")
    return 0


def register(sub) -> None:
    """`robustness`."""
    r = sub.add_parser("robustness", help="accuracy under common corruptions (CIFAR-C "
                                          "definitions, computed locally)")
    r.add_argument("run", help="run folder made by `cifarlens train`")
    add_split_arg(r)
    r.add_argument("--images", type=positive_int, metavar="N",
                   help="a class-balanced N of the split's images (default: 500 on a CPU, all "
                        "on a GPU; docs/robustness.md says why)")
    r.add_argument("--corruptions", nargs="+", metavar="NAME",
                   help="corruptions by their CIFAR-C names (default: the 15 of the mCE, and on "
                        "a GPU the 4 held out too)")
    r.add_argument("--held-out", action="store_true",
                   help="add the 4 held-out corruptions (speckle_noise, gaussian_blur, spatter, "
                        "saturate) on a CPU too")
    r.add_argument("--severities", type=int_range(1, 5), nargs="+", metavar="S",
                   help="severities from 1 to 5 (default: all five)")
    r.add_argument("--corruptions-dir", metavar="DIR",
                   help="read the published CIFAR-10-C/100-C .npy files in DIR instead of "
                        "computing the corruptions (checksums recorded)")
    r.add_argument("--batch-size", type=positive_int, default=500, help="images per batch")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: a CUDA GPU if there is one, else the CPU")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(r)
    r.set_defaults(func=cmd_robustness)
