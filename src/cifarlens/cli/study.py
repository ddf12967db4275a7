"""`cifarlens study`, `report` and `demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cifarlens import _console as console
from cifarlens.cli.args import (
    add_seeds_jobs,
    add_threads_arg,
    add_train_args,
    add_verdict_args,
    change_keys,
    int_range,
    positive_int,
    train_overrides,
)
from cifarlens.cli.engine import add_engine_args, make_engine
from cifarlens.errors import CifarlensError
from cifarlens.study.schema import StudySummary, Timing


def cmd_study(a: argparse.Namespace) -> int:
    from cifarlens.study.run import run_study

    overrides = train_overrides(a)
    design, overrides = study_design(a, overrides)
    # None: augment=crop-flip for a new study, the recorded changes when resuming one
    summary = run_study(a.out, preset=a.preset, changes=a.change, seeds=design,
                        overrides=overrides, options=study_options(a), engine=make_engine(a))
    _report(summary, Path(a.out))
    return 0


def study_design(a: argparse.Namespace, overrides: dict) -> tuple:
    """The study's Design (seeds, --max-seeds, --margin, --detect in points) and the training
    overrides with --vary's held sources set to the first seed."""
    from cifarlens.study.design import Design
    from cifarlens.training.config import make_config, vary_overrides

    design = Design(seeds=a.seeds, max_seeds=a.max_seeds, margin=a.margin / 100,
                    detect=a.detect / 100)
    if a.vary:
        first = make_config(a.preset, **overrides).seed
        overrides = {**overrides, **vary_overrides(a.vary, first)}
    return design, overrides


def study_options(a: argparse.Namespace):
    """--top and the robustness flags as the study's options."""
    from cifarlens.stages.robustness import RobustnessRequest
    from cifarlens.study.options import StudyOptions

    asked = a.robustness_images or a.robustness_corruptions or a.robustness_severities
    if asked and not a.robustness:
        raise CifarlensError("--robustness-images, --robustness-corruptions and "
                             "--robustness-severities need --robustness")
    request = None
    if a.robustness:
        request = RobustnessRequest(
            images=a.robustness_images,
            corruptions=tuple(a.robustness_corruptions) if a.robustness_corruptions else None)
        if a.robustness_severities:
            request = RobustnessRequest(request.images, request.corruptions,
                                        tuple(sorted(set(a.robustness_severities))))
    return StudyOptions(failures_top=a.top, robustness=request)


# The demo's verdict is one machine's: bf16 kernels and thread counts move its last bits, and
# with 3 seeds of a small model that can flip "significant" (issue 20).
DEMO_NOTE = ("note: generated data; the verdict varies with the CPU type, precision and "
             "threads, the pipeline and figures do not (README, Reproducibility)")


def _report(summary: StudySummary, study: Path, note: str | None = None) -> None:
    """Write the study's report, then say the verdict once, in the report's words, and where
    the report is (stdout: results)."""
    from cifarlens.report import ablation_lines, headline, render_report

    html, md = render_report(study, summary)
    console.log(f"markdown report: {md}")

    print(headline(summary, study))
    for line in ablation_lines(summary):
        print(line)
    if note:
        print(note)
    took = _time_line(summary)
    if took:
        print(took)
    print(f"report: {html}")


def _time_line(summary: StudySummary) -> str | None:
    """What this invocation measured: its wall time and the share spent outside training, on
    which device and threads (the README's time table is one machine's; this is yours)."""
    t, env = summary.timing or Timing(), summary.environment
    total, train = t.total_s, t.train_s
    if total is None or total <= 0:
        return None
    fmt_duration = console.fmt_duration
    line = f"time: {fmt_duration(total)} in all"
    if train is not None and train > 0:
        line += (f", {fmt_duration(train)} training ({100 * (total - train) / total:.0f}% "
                 "outside training)")
    gpu = str(env.device or "").startswith("cuda")
    where = (env.gpu_model if gpu else env.cpu_model) or env.device
    if where:
        k = env.threads
        line += f", on {where}" + (f" with {k} thread{'s' * (k != 1)}" if k else "")
    return line


def cmd_report(a: argparse.Namespace) -> int:
    from cifarlens.report import render_report

    study = Path(a.study)
    from cifarlens.study.folder import StudyFolder

    if not (study / StudyFolder.SUMMARY).is_file():
        raise CifarlensError(f"{study} is not a finished study (no summary.json)")
    html, md = render_report(study)
    print(f"report: {html} (markdown: {md})")
    if getattr(a, "figure_format", None):
        from cifarlens.report import export_figures

        files, skipped = export_figures(study, a.figure_format)
        for f in files:
            print(f"figure: {f}")
        if skipped:
            print(f"not redrawn: {'; '.join(skipped)}", file=sys.stderr)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from cifarlens.study.engines.local import demo_threads
    from cifarlens.study.run import demo

    if not a.threads and "OMP_NUM_THREADS" not in os.environ and a.jobs == 1:
        import torch

        n = demo_threads(os.cpu_count(), torch.cuda.is_available())
        if n is not None:  # this command's process only, like --threads
            torch.set_num_threads(n)
            console.log(f"demo: training on {n} of {os.cpu_count()} CPU threads, analysing "
                        "finished runs on the rest (--threads N to choose)")
    summary = demo(a.out, seeds=a.seeds, jobs=a.jobs, progress=not a.no_progress)
    _report(summary, Path(a.out) / "study", note=DEMO_NOTE)
    return 0


def register(sub) -> None:
    """`study`, `report` and `demo`."""
    s = sub.add_parser("study", help="baseline vs one change: train, evaluate, explain, compare, report")
    add_train_args(s)
    s.add_argument("--out", default="study", help="study folder (default: ./study)")
    s.add_argument("--change", action="append", metavar="KEY=VALUE",
                   help="a training setting one variant changes (default augment=crop-flip); "
                        "repeat for several variants against one shared baseline; new changes "
                        "are added to an existing study in --out, reusing its runs. "
                        f"KEY is one of: {', '.join(change_keys())}")
    add_seeds_jobs(s)
    add_engine_args(s)
    add_verdict_args(s)
    s.add_argument("--top", type=positive_int, default=12, help="failures to explain and track")
    s.add_argument("--robustness", action="store_true",
                   help="also evaluate every run under the 15 common corruptions (CIFAR-C "
                        "definitions, computed locally) and compare the arms per corruption "
                        "family across seeds; on a CPU 500 class-balanced test images (about "
                        "10%% of a quick study's training time, measured), on a GPU all of them "
                        "(docs/robustness.md)")
    s.add_argument("--robustness-images", type=positive_int, metavar="N",
                   help="with --robustness: a class-balanced N test images instead")
    s.add_argument("--robustness-corruptions", nargs="+", metavar="NAME",
                   help="with --robustness: these corruptions only (CIFAR-C names)")
    s.add_argument("--robustness-severities", type=int_range(1, 5), nargs="+", metavar="S",
                   help="with --robustness: these severities only (default: 1-5)")
    s.set_defaults(func=cmd_study)

    r = sub.add_parser("report", help="rebuild a study's report from its saved artifacts")
    r.add_argument("study", help="study folder made by `cifarlens study` (with summary.json)")
    r.add_argument("--figure-format", choices=["svg", "pdf"], default=None,
                   help="also redraw the figures the saved data allows (curves, confusions, "
                        "per-class changes, reliability) as SVG or PDF into "
                        "STUDY/figures/<format>/ (default: none)")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the smoke study on generated data, 3 seeds, offline "
                                     "(time: README, 'How long it takes')")
    d.add_argument("--out", default="cifarlens-demo", help="folder (default ./cifarlens-demo)")
    add_seeds_jobs(d)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_arg(d, "half the cores on a CPU, the other half analysing finished runs "
                        "beside training; OMP_NUM_THREADS is respected")
    d.set_defaults(func=cmd_demo)
