"""The study: baseline vs a variant that differs in exactly one training setting, end to end.

STUDY/
  study.json                 the two configs and the change (a resumed study must match it)
  runs/baseline-sN/, runs/variant-sN/   ordinary run folders (train, evaluate, failures, explain)
  figures/                   comparison figures
  summary.json               every number the report states
  report.html, report.md     the report (rebuilt by `cifarlens report STUDY`)

Each stage is skipped when its output exists, so a stopped study resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from pathlib import Path
from typing import Any

from cifarlens import _console as console
from cifarlens._io import RunLock, read_json, write_json

# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from cifarlens.cam.figures import model_scale, plot_tracking  # noqa: E402,F401
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.engines.local import run_sequential
from cifarlens.study.engines.processes import run_parallel
from cifarlens.study.estimate import say_plan
from cifarlens.study.folder import StudyFolder
from cifarlens.study.guard import check_split, check_study_runs, compare_environments
from cifarlens.study.plan import DEFAULT_SEEDS, merge_study, plan_study
from cifarlens.study.schema import check_summary
from cifarlens.study.stages import stage_failures
from cifarlens.study.summary import build_summary
from cifarlens.training.config import TrainConfig


def run_study(out: str | Path, *, preset: str = "paper", change: str | None = None,
              seeds: int = DEFAULT_SEEDS, overrides: dict[str, Any] | None = None,
              failures_top: int = 12, jobs: int = 1, progress: bool = True, log=None,
              command: str | None = None, changes: list[str] | None = None) -> dict[str, Any]:
    """Train, evaluate, explain and compare a baseline and one variant per change.

    `change="KEY=VALUE"` (one) or `changes=[...]` (several; neither: augment=crop-flip, or the
    changes an existing study in `out` holds). In a folder that holds a study with the same
    baseline and seeds, new changes are added to it: its finished runs are reused and only
    the new variants are trained."""
    out = Path(out)
    say = log or console.log
    if jobs < 1:
        raise CifarlensError("--jobs must be at least 1")
    folder = StudyFolder(out)
    if change is not None or changes is not None or not folder.file(folder.PLAN).exists():
        plan, arms = plan_study(preset, change, seeds, overrides, changes=changes)  # refuse early
        check_split(arms["baseline"])  # before the study folder exists
    t0 = time.perf_counter()
    with RunLock(out), contextlib.ExitStack() as held:
        if folder.file(folder.PLAN).exists():
            old = read_json(folder.file(folder.PLAN))
            plan, arms, added = merge_study(out, old, preset, seeds, overrides, change, changes)
            say(f"resuming the study in {out}" + (f"; adding {', '.join(added)}" if added else ""))
            rewrite = bool(added) or plan["changes"] != old.get("changes")
        else:
            old, rewrite = None, True
            plan, arms = plan_study(preset, change, seeds, overrides, changes=changes)
        runs: dict[str, dict[int, Run]] = {a: {} for a in arms}
        todo: list[tuple[str, TrainConfig, Run]] = []
        for seed in plan["seeds"]:
            for arm, cfg in arms.items():
                run = folder.run(arm, seed)
                runs[arm][seed] = run
                todo.append((arm, dataclasses.replace(cfg, seed=seed), run))
        check_study_runs(todo, out)  # other data or environment: refused before it is recorded
        _hold_runs(held, [run for _, _, run in todo])
        if rewrite:
            write_json(folder.file(folder.PLAN), plan)
        say_plan(todo, say)  # what it will do and about how long, before the first step
        # Wall time per stage (docs/benchmarks.md, "Cost beside training"); with --jobs the runs
        # overlap, so only their total is known.
        timing: dict[str, float | None] = {"train_s": 0.0, "evaluate_s": 0.0}
        t_runs = time.perf_counter()
        if jobs == 1:
            run_sequential(todo, progress, say, timing,
                            failures_top=failures_top if arms else None)
        else:
            run_parallel(todo, jobs, progress, say)
            timing = {"train_s": None, "evaluate_s": None}
        timing["runs_s"] = time.perf_counter() - t_runs
        try:
            check_same_environment([run for _, _, run in todo])
        except CifarlensError:
            _unrecord(folder, old)  # a refused comparison is not kept in study.json
            raise
        s0 = plan["seeds"][0]
        first = plan["changes"][0]["slug"]
        t_an = time.perf_counter()
        stage_failures(runs["baseline"][s0], failures_top, say, progress=progress)
        summary = build_summary(out, plan, runs, failures_top, say)
        from cifarlens.study.browse import prepare as prepare_browse

        summary["browse"] = prepare_browse(out, runs["baseline"][s0], runs[first][s0])
        timing["analysis_s"] = time.perf_counter() - t_an
        summary["timing"] = {"total_s": time.perf_counter() - t0, **timing}
        summary["command"] = command or f"cifarlens study --out {shlex.quote(str(out))}"
        # the shape the report reads (summary_schema.py): a producer bug stops here, not there
        write_json(folder.file(folder.SUMMARY), check_summary(summary, "the study's summary"))
        from cifarlens.report import render_report

        html, md = render_report(out, summary)
    say(f"markdown report: {md}")
    return summary


def _unrecord(folder: StudyFolder, old: dict[str, Any] | None) -> None:
    """study.json back to what it held before this call (none: removed)."""
    if old is None:
        folder.file(folder.PLAN).unlink(missing_ok=True)
    else:
        write_json(folder.file(folder.PLAN), old)


def _hold_runs(stack: contextlib.ExitStack, runs: list[Run]) -> None:
    """Lock every run of the study until its report is written: a run's lock used to be free
    between its training and its analysis, and a `cifarlens evaluate RUN` there aborted the
    study (issue 20). The analysis worker and --jobs processes work under these locks
    (`_io.adopt_locks_of`). A run folder made only for its lock goes again with it."""
    for run in runs:
        if not run.path.exists():
            stack.callback(_remove_if_empty, run.path)
        stack.enter_context(RunLock(run.path))


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # only an empty folder: a run that trained keeps everything


def check_same_environment(runs: list[Run] | list[Path]) -> None:
    """Refuse to compare runs that resolved precision, device or hardware differently."""
    compare_environments([(r.name, r.config.get("environment", {}))
                          for r in map(Run.of, runs)])


def demo(out: str | Path, *, seeds: int = DEFAULT_SEEDS, jobs: int = 1, progress: bool = True,
         log=None) -> dict[str, Any]:
    """The smoke study on freshly generated data, 3 seeds per arm: offline, a few minutes on
    2 CPU cores."""
    from cifarlens.data.synth import ensure_synthetic

    out = Path(out)
    data_root = out / "data"
    # Kept when complete and the same; an incomplete or stale generated dataset is rewritten.
    ensure_synthetic(data_root, "cifar100", train_per_class=50, test_per_class=10, seed=0,
                     label_noise=0.03)
    cmd = f"cifarlens demo --out {shlex.quote(str(out))}"
    cmd += f" --seeds {seeds}" if seeds != DEFAULT_SEEDS else ""
    cmd += f" --jobs {jobs}" if jobs != 1 else ""
    return run_study(out / "study", preset="smoke", overrides={"data_dir": str(data_root)},
                     seeds=seeds, jobs=jobs, progress=progress, log=log, command=cmd)
