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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifarlens import _console as console
from cifarlens._io import RunLock, read_json, write_json
from cifarlens.data.synth import ensure_synthetic
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.browse import prepare as prepare_browse
from cifarlens.study.design import AUTO, Design, as_design, wave_pairs
from cifarlens.study.engines.base import Engine, EngineResult, RunJob
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.engines.processes import ProcessesEngine
from cifarlens.study.estimate import say_plan
from cifarlens.study.folder import StudyFolder
from cifarlens.study.guard import check_split, check_study_runs, compare_environments
from cifarlens.study.options import StudyOptions
from cifarlens.study.plan import DEFAULT_SEEDS, merge_study, plan_study, study_command
from cifarlens.study.robustness import add_robustness, plan_line, robustness_args
from cifarlens.study.schema import (
    Browse,
    EngineRecord,
    RunRecord,
    StudySummary,
    Timing,
    read_summary,
    write_summary,
)
from cifarlens.study.summary import build_summary
from cifarlens.study.waves import run_waves
from cifarlens.training.config import TrainConfig


def run_study(out: str | Path, *, preset: str = "paper",
              changes: str | Sequence[str] | None = None,
              seeds: int | str | Design = DEFAULT_SEEDS,
              overrides: dict[str, Any] | None = None, options: StudyOptions | None = None,
              engine: Engine | None = None, log=None) -> StudySummary:
    """Train, evaluate, explain and compare a baseline and one variant per change; write
    STUDY/summary.json and return it (`render_report(out)` turns it into the report).

    `changes`: "KEY=VALUE" or a list of them (none: augment=crop-flip, or the changes an
    existing study in `out` holds). In a folder that holds a study with the same baseline and
    seeds, new changes are added to it: its finished runs are reused and only the new variants
    are trained. `seeds`: a number of seed pairs, "auto" (waves of pairs until the sequential
    rule decides, study/waves.py) or a `Design` (also the equivalence margin, the change the
    power sentence plans for and --max-seeds). `options`: the failures to track and whether to
    evaluate every run under the common corruptions (`StudyOptions`; default: 12 failures, no
    corruptions). `engine` produces the runs (default: `LocalEngine`, one after another in this
    process, with progress bars on stderr); `log` takes each line of progress (default:
    stderr)."""
    out = Path(out)
    say = log or console.log
    engine = engine or LocalEngine(progress=True)
    options = options or StudyOptions()
    options.check()
    design = as_design(seeds)
    seeds = _first_seeds(out, design, engine, changes)
    change, changes = (changes, None) if isinstance(changes, str) else (None, changes)
    changes = list(changes) if changes is not None else None
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
        plan["engine"] = engine.name  # the engine of the last invocation that trained
        rewrite = rewrite or (old or {}).get("engine") != engine.name
        plan["design"] = design.record()
        result = EngineResult(train_s=0.0, analysis_s=0.0)
        produced: set[str] = set()

        def produce(seed_list: list[int]) -> None:
            plan["seeds"] = seed_list
            runs, todo = _runs_of(folder, plan, arms)
            check_study_runs(todo, out)  # other data or environment: refused before recorded
            new = [t for t in todo if t[2].name not in produced]
            _hold_runs(held, [run for _, _, run in new])
            if rewrite or design.auto:
                write_json(folder.file(folder.PLAN), plan)
            say_plan(new, say)  # what it will do and about how long, before the first step
            if options.robustness is not None and new:
                say(plan_line(options.robustness, new[0][1].device, len(new)))
            _add(result, engine.run(plan_jobs(plan, new, options), say))
            produced.update(run.name for _, _, run in new)

        t_runs = time.perf_counter()
        if design.auto:
            wave = (old or {}).get("sequential", {}).get("wave") or wave_pairs(engine, len(arms))
            run_waves(plan, design, wave, produce, _diffs_of(folder), say)
            write_json(folder.file(folder.PLAN), plan)  # the last look, recorded
        else:
            produce(plan["seeds"])
        runs, todo = _runs_of(folder, plan, arms)
        runs_s = time.perf_counter() - t_runs
        try:
            check_same_environment([run for _, _, run in todo])
        except CifarlensError:
            _unrecord(folder, old)  # a refused comparison is not kept in study.json
            raise
        t_an = time.perf_counter()
        summary = build_summary(out, plan, runs, options.failures_top, say)
        if options.robustness is not None:
            add_robustness(summary, out, plan, runs, options.robustness)
        s0 = plan["seeds"][0]
        summary.browse = Browse(**prepare_browse(out, runs["baseline"][s0],
                                                 runs[summary.main.slug][s0]))
        summary.timing = Timing(total_s=time.perf_counter() - t0, train_s=result.train_s,
                                evaluate_s=result.analysis_s, overlapped=result.overlapped,
                                runs_s=runs_s, analysis_s=time.perf_counter() - t_an)
        summary.engine = _engine_record(folder, engine.name, result, [r.name for _, _, r in todo])
        summary.command = study_command(out, plan) + robustness_args(options.robustness)
        write_summary(folder.file(folder.SUMMARY), summary)  # checked as the report reads it
    return summary


def _first_seeds(out: Path, design: Design, engine: Engine, changes: Any) -> int:
    """Seed pairs the study plans before its first look: all of them (fixed), the first
    look's count, or, resuming a --seeds auto study, the seeds it had reached."""
    if not design.auto:
        return int(design.seeds)
    folder = StudyFolder(out)
    if folder.file(folder.PLAN).exists():
        old = read_json(folder.file(folder.PLAN))
        if (old.get("design") or {}).get("seeds") == AUTO:
            return len(old["seeds"])
    n_changes = 1 if changes is None or isinstance(changes, str) else max(len(changes), 1)
    return design.first_seeds(wave_pairs(engine, 1 + n_changes))


def _diffs_of(folder: StudyFolder):
    """Per-seed test-accuracy differences (variant minus baseline) of one change's runs."""
    def diffs(slug: str, seeds: list[int]) -> list[float]:
        return [Run(folder.run(slug, s).path).metrics("test")["top1"]
                - Run(folder.run("baseline", s).path).metrics("test")["top1"] for s in seeds]
    return diffs


def _add(total: EngineResult, part: EngineResult) -> None:
    """One wave's engine result added to the study's."""
    total.outcomes += part.outcomes
    for key in ("train_s", "analysis_s"):
        x = getattr(part, key)
        setattr(total, key, None if x is None or getattr(total, key) is None
                else getattr(total, key) + x)
    total.overlapped = total.overlapped or part.overlapped
    total.record.update(part.record)


def _runs_of(folder: StudyFolder, plan: dict[str, Any], arms: dict[str, TrainConfig]
             ) -> tuple[dict[str, dict[int, Run]], list[tuple[str, TrainConfig, Run]]]:
    """Every run of the plan by arm and seed, and the (arm, config, run) list in training
    order: seed by seed, the baseline first."""
    runs: dict[str, dict[int, Run]] = {a: {} for a in arms}
    todo: list[tuple[str, TrainConfig, Run]] = []
    for seed in plan["seeds"]:
        for arm, cfg in arms.items():
            run = folder.run(arm, seed)
            runs[arm][seed] = run
            todo.append((arm, dataclasses.replace(cfg, seed=seed), run))
    return runs, todo


def plan_jobs(plan: dict[str, Any], todo: list[tuple[str, TrainConfig, Run]],
              options: StudyOptions) -> list[RunJob]:
    """The engine's work: one job per run. The report shows the first seed's figures, and
    tracks the failures of the first seed's baseline (found and explained with its run, with
    their nearest training images); the first seed's runs keep their features for the view of
    each change through the data; robustness, when asked, is every run's (the arms are compared
    across seeds)."""
    s0 = plan["seeds"][0]
    return [RunJob(name=run.name, arm=arm, seed=cfg.seed, run_dir=str(run.path.resolve()),
                   config=dataclasses.asdict(cfg), figures=cfg.seed == s0,
                   failures_top=options.failures_top if (arm, cfg.seed) == ("baseline", s0)
                   else None, neighbours=cfg.seed == s0, robustness=options.robustness)
            for arm, cfg, run in todo]


def _engine_record(folder: StudyFolder, name: str, result: EngineResult,
                   runs: list[str]) -> EngineRecord:
    """This invocation's engine and where each run ran. A run it did not train keeps the
    record of the invocation that did (the last summary's), so a rerun, a resume or an added
    change does not lose where the earlier runs ran."""
    before: dict[str, RunRecord] = {}
    if folder.file(folder.SUMMARY).is_file():
        with contextlib.suppress(CifarlensError):  # unreadable: nothing to keep
            old = read_summary(folder.file(folder.SUMMARY)).engine
            before = old.runs if old else {}
    now = {o.name: RunRecord(**o.record()) for o in result.outcomes}
    keep = {r: now[r] if r in now and (now[r].trained or r not in before) else before[r]
            for r in runs if r in now or r in before}
    return EngineRecord(name=name, runs=keep, **result.record)


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
         log=None) -> StudySummary:
    """The smoke study on freshly generated data, 3 seeds per arm: offline, a few minutes on
    2 CPU cores."""
    out = Path(out)
    data_root = out / "data"
    # Kept when complete and the same; an incomplete or stale generated dataset is rewritten.
    ensure_synthetic(data_root, "cifar100", train_per_class=50, test_per_class=10, seed=0,
                     label_noise=0.03)
    engine = ProcessesEngine(jobs, progress) if jobs > 1 else LocalEngine(progress)
    return run_study(out / "study", preset="smoke", overrides={"data_dir": str(data_root)},
                     seeds=seeds, engine=engine, log=log)
