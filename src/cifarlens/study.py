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
import hashlib
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _console as console
from . import metrics as M
from . import stats as S
from ._defaults import CONFIDENT
from ._io import RunLock, adopt_locks_of, lock_owner, read_json, write_json
from .errors import CifarlensError
from .estimate import say_plan
from .runs import Run
from .study_folder import StudyFolder
from .study_guard import check_split, check_study_runs, compare_environments
from .summary_schema import check_summary
from .train import TRAINING_SETTINGS, TrainConfig, config_diff, make_config, train

# --- the one-change guard -------------------------------------------------------------------------


def parse_change(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` for one training setting, VALUE parsed to the setting's type."""
    if "=" not in text:
        raise CifarlensError(f"--change must look like KEY=VALUE (e.g. augment=crop-flip), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    key = key.replace("-", "_")
    if key in PAIRING_SETTINGS:
        raise CifarlensError(_pairing_refusal(key))
    if key not in TRAINING_SETTINGS:
        # only the settings the one-change guard accepts: never suggest one it then refuses
        changeable = [k for k in TRAINING_SETTINGS if k not in PAIRING_SETTINGS]
        raise CifarlensError(f"--change: {key!r} is not a training setting; choose from: "
                             f"{', '.join(changeable)}")
    default = getattr(TrainConfig(), key)
    if raw.lower() in ("none", "null") and key == "train_limit":
        return key, None
    try:
        if key == "train_limit" or isinstance(default, int) and not isinstance(default, bool):
            return key, int(raw)
        if isinstance(default, float):
            v = float(raw)
            if not np.isfinite(v):
                raise ValueError
            return key, v
    except ValueError:
        raise CifarlensError(f"--change: {key} needs a {type(default).__name__}, got {raw!r}") from None
    return key, raw


def config_differences(a: TrainConfig, b: TrainConfig) -> list[tuple[str, Any, Any]]:
    return config_diff(dataclasses.asdict(a), dataclasses.asdict(b))


# Settings whose change breaks the pairing of the two arms: other test images (dataset) or
# another split (val_fraction), so neither McNemar nor the seed-paired test would apply.
PAIRING_SETTINGS = ("dataset", "val_fraction")


def _pairing_refusal(key: str) -> str:
    return (f"--change {key} is refused: the two arms would not be compared on the same "
            f"{'test images' if key == 'dataset' else 'split'}, so the paired tests do not apply; "
            "run two studies instead")


def one_change_guard(a: TrainConfig, b: TrainConfig) -> str:
    """The seed's method rests on exactly one modification: refuse anything else."""
    for key in PAIRING_SETTINGS:
        if getattr(a, key) != getattr(b, key):
            raise CifarlensError(_pairing_refusal(key))
    if a.seed != b.seed:
        raise CifarlensError(f"baseline and variant must share the seed ({a.seed} vs {b.seed}); "
                             "use --seeds N to repeat both arms over several seeds")
    diffs = config_differences(a, b)
    if len(diffs) != 1:
        listed = "; ".join(f"{k} ({x!r} vs {y!r})" for k, x, y in diffs)
        what = "no setting" if not diffs else f"{len(diffs)} settings: {listed}"
        raise CifarlensError(f"baseline and variant must differ in exactly one training setting, "
                             f"but they differ in {what}")
    return diffs[0][0]


# --- the study ------------------------------------------------------------------------------------


# Three seeds per arm by default: the fewest that give the seed-level t-test 2 degrees of freedom.
# One pair of trained models measures only which test images were drawn, not training noise.
DEFAULT_SEEDS = 3
DEFAULT_CHANGE = "augment=crop-flip"
SINGLE_SLUG = "variant"  # a one-change study's variant arm: runs/variant-sN, as always


def change_slug(key: str, value: Any) -> str:
    """A run-folder-safe name for one change, e.g. 'augment=crop-flip', 'weight_decay=0.001'
    (its runs: runs/SLUG-sN). Anything but letters, digits and . _ = + - becomes '_'; a long
    value (a model's import path) is cut and keeps a hash of the full text, so slugs stay unique."""
    text = f"{key}={value}"
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)
    if len(slug) > 60:
        slug = slug[:50] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return slug


def _parse_changes(change: str | None, changes: list[str] | None) -> list[tuple[str, Any]]:
    if change is not None and changes is not None:
        raise CifarlensError("give either change= or changes=, not both")
    texts = list(changes) if changes is not None else [change or DEFAULT_CHANGE]
    if not texts:
        raise CifarlensError("a study needs at least one --change")
    parsed: list[tuple[str, Any]] = []
    for t in texts:
        kv = parse_change(t)
        if kv in parsed:  # same setting, same value: the same variant trained twice
            raise CifarlensError(f"--change {kv[0]}={kv[1]} is given twice")
        parsed.append(kv)
    return parsed


def plan_study(preset: str = "paper", change: str | None = None,
               seeds: int = DEFAULT_SEEDS, overrides: dict[str, Any] | None = None, *,
               changes: list[str] | None = None, slugs: dict[tuple[str, Any], str] | None = None
               ) -> tuple[dict[str, Any], dict[str, TrainConfig]]:
    """What a study will train, without training anything: the plan written to study.json and
    every arm's config ("baseline", then one arm per change, named by its slug). Seed s of the
    baseline and of every variant share split and initialization (all derive from the seed),
    so each variant is paired with the baseline by seed.

    `change` (one KEY=VALUE) or `changes` (several); each variant differs from the baseline in
    exactly its one setting. One change keeps the arm name "variant" (runs/variant-sN); several
    get `change_slug` names unless `slugs` (from an existing study.json) already names them."""
    if seeds < 1:
        raise CifarlensError("--seeds must be at least 1")
    base = make_config(preset, **(overrides or {}))
    if base.seed + seeds - 1 >= 2**32:  # would fail only after hours of training otherwise
        raise CifarlensError(f"--seed {base.seed} with --seeds {seeds} runs past the largest "
                             "seed, 4294967295")
    parsed = _parse_changes(change, changes)
    slugs = dict(slugs or {})
    arms: dict[str, TrainConfig] = {"baseline": base}
    listed = []
    for key, value in parsed:
        variant = dataclasses.replace(base, **{key: value})
        make_config(preset, **{**(overrides or {}), key: value})  # validates the changed value
        one_change_guard(base, variant)
        slug = slugs.get((key, value)) or (SINGLE_SLUG if len(parsed) == 1 else
                                           change_slug(key, value))
        if slug in arms:  # two values that sanitise alike (model=a:b, model=a_b)
            slug += "-" + hashlib.sha1(f"{key}={value!r}".encode()).hexdigest()[:8]
        arms[slug] = variant
        listed.append({"key": key, "baseline": getattr(base, key), "variant": value,
                       "slug": slug})
    first = listed[0]
    plan = {"preset": preset,
            # the first (or only) change: what every one-change reader of study.json knows
            "change": {k: first[k] for k in ("key", "baseline", "variant")},
            "changes": listed,
            "seeds": [base.seed + i for i in range(seeds)],
            "baseline": dataclasses.asdict(base), "variant": dataclasses.asdict(arms[first["slug"]]),
            "variants": {c["slug"]: dataclasses.asdict(arms[c["slug"]]) for c in listed}}
    return plan, arms


def recorded_changes(study: dict[str, Any]) -> list[dict[str, Any]]:
    """A study.json's changes with their slugs; a study made before several changes existed
    holds one change, whose runs are runs/variant-sN."""
    if isinstance(study.get("changes"), list):
        return study["changes"]
    return [{**study["change"], "slug": SINGLE_SLUG}]


def _change_text(c: dict[str, Any]) -> str:
    return f"{c['key']}={c['variant']}"


def _merge_study(out: Path, old: dict[str, Any], preset: str, seeds: int,
                 overrides: dict[str, Any] | None, change: str | None,
                 changes: list[str] | None) -> tuple[dict[str, Any], dict[str, TrainConfig],
                                                     list[str]]:
    """The plan for a study folder that already holds a study: the same baseline and seeds,
    its recorded changes (slugs and runs kept) plus any new ones. A different baseline is
    refused, listing the differences; nothing is deleted."""
    base = make_config(preset, **(overrides or {}))
    diffs = config_diff(old["baseline"], dataclasses.asdict(base))
    if diffs:
        listed = "; ".join(f"{k} {x!r} vs {y!r}" for k, x, y in diffs)
        raise CifarlensError(f"{out} holds a study with another baseline ({listed}); a change "
                             "can be added only with the same preset and settings; use another "
                             "--out for a new baseline")
    seed_list = [base.seed + i for i in range(seeds)]
    if old.get("seeds") != seed_list:
        raise CifarlensError(f"{out} holds a study over seeds {old.get('seeds')}, not "
                             f"{seed_list}; pass the same --seeds (and --seed) to resume it, or "
                             "use another --out")
    prev = recorded_changes(old)
    old_texts = [_change_text(c) for c in prev]
    new = [] if change is None and changes is None else _parse_changes(change, changes)
    old_kv = [(c["key"], c["variant"]) for c in prev]
    added = [f"{k}={v}" for k, v in new if (k, v) not in old_kv]
    plan, arms = plan_study(preset, seeds=seeds, overrides=overrides,
                            changes=old_texts + added,
                            slugs={(c["key"], c["variant"]): c["slug"] for c in prev})
    return plan, arms, added


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
            plan, arms, added = _merge_study(out, old, preset, seeds, overrides, change, changes)
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
            _run_sequential(todo, progress, say, timing,
                            failures_top=failures_top if arms else None)
        else:
            _run_parallel(todo, jobs, progress, say)
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
        _stage_failures(runs["baseline"][s0], failures_top, say, progress=progress)
        summary = build_summary(out, plan, runs, failures_top, say)
        from .browse import prepare as prepare_browse

        summary["browse"] = prepare_browse(out, runs["baseline"][s0], runs[first][s0])
        timing["analysis_s"] = time.perf_counter() - t_an
        summary["timing"] = {"total_s": time.perf_counter() - t0, **timing}
        summary["command"] = command or f"cifarlens study --out {shlex.quote(str(out))}"
        # the shape the report reads (summary_schema.py): a producer bug stops here, not there
        write_json(folder.file(folder.SUMMARY), check_summary(summary, "the study's summary"))
        from .report import render_report

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


def _stage_train(cfg: TrainConfig, run: Run | Path, progress: bool, say, arm: str) -> None:
    run = Run.of(run)
    if run.is_done():
        return
    say(f"[{arm} seed {cfg.seed}] training")
    train(cfg, run.path, resume=True, progress=progress, log=say)


def _stage_evaluate(run: Run | Path, say, figures: bool = True) -> None:
    """Evaluate unless both splits' predictions and metrics come from the run's final best.pt
    (an analysis made from any other checkpoint is made again, never reused). `figures`: draw
    the run's test figures; the report shows those of the first seed only, and drawing is most
    of evaluate's time (docs/benchmarks.md section 10): `cifarlens evaluate RUN` draws them
    for any other run."""
    from .evaluate import evaluate

    run = Run.of(run)
    if all(run.metrics_current(s) for s in ("val", "test")):
        return
    evaluate(run, ("val", "test"), figures=("test",) if figures else (), log=say)


def _finished(run: Run | Path) -> bool:
    run = Run.of(run)
    return run.is_done() and all(run.has(Run.metrics_name(s)) for s in ("val", "test"))


class StudyProgress:
    """Whole-study progress on stderr: runs done of all, and an ETA for the runs left from the
    time measured per run in this invocation (wall time / runs finished, so runs trained side by
    side with --jobs count at their real throughput). Runs finished before a resume count as
    done but not in the timing."""

    def __init__(self, total: int, done: int, say, clock=time.perf_counter) -> None:
        self.total, self.done, self.say, self.clock = total, done, say, clock
        self.t0, self.finished = clock(), 0

    def begin(self) -> None:
        left = self.total - self.done
        if left:
            self.say(f"[{self.done}/{self.total} runs] {left} to train and evaluate; "
                     "time left known after the first")

    def eta_s(self) -> float | None:
        if not self.finished:
            return None
        return (self.clock() - self.t0) / self.finished * (self.total - self.done)

    def run_done(self, name: str, took_s: float) -> str:
        self.done += 1
        self.finished += 1
        left = self.total - self.done
        eta = self.eta_s()
        tail = (f"{left} left, about {console.fmt_duration(eta)} left" if left and eta is not None
                else "all runs done")
        line = f"[{self.done}/{self.total} runs] {name} done in {console.fmt_duration(took_s)}; {tail}"
        self.say(line)
        return line


def _run_sequential(todo: list[tuple[str, TrainConfig, Run]], progress: bool, say,
                    timing: dict[str, Any] | None = None, failures_top: int | None = None
                    ) -> None:
    """Train the runs one after another. Each finished run is evaluated (and the first
    baseline's failures explained, with `failures_top`) beside the next run's training when a
    spare core or a GPU makes that free (`overlap_analysis`), else right after it."""
    prog = StudyProgress(len(todo), sum(_finished(run) for _, _, run in todo), say)
    prog.begin()
    timing = {"train_s": 0.0, "evaluate_s": 0.0} if timing is None else timing
    first_seed = todo[0][1].seed if todo else None
    overlap = _Overlap(say) if todo and overlap_analysis(todo[0][1].device) else None
    timing["overlapped"] = overlap is not None
    try:
        for k, (arm, cfg, run) in enumerate(todo):
            fresh = not _finished(run)
            t = time.perf_counter()
            _stage_train(cfg, run, progress, say, arm)
            t_eval = time.perf_counter()
            timing["train_s"] += t_eval - t
            top = failures_top if k == 0 and arm == "baseline" else None
            if overlap is not None:
                overlap.submit(run, figures=cfg.seed == first_seed, failures_top=top)
            else:
                _stage_evaluate(run, say, figures=cfg.seed == first_seed)
                timing["evaluate_s"] += time.perf_counter() - t_eval
            if fresh:
                prog.run_done(f"{arm} seed {cfg.seed}", time.perf_counter() - t)
        if overlap is not None:
            t_wait = time.perf_counter()
            overlap.wait()  # only the last run's analysis is left to wait for
            timing["evaluate_s"] += time.perf_counter() - t_wait
    finally:
        if overlap is not None:
            overlap.close()


# --- analysis beside training -----------------------------------------------------------------


def overlap_analysis(device: str) -> bool:
    """Whether evaluating a run beside the next run's training costs the training nothing: on
    a GPU (training waits on the GPU, the CPU draws the figures) or on a CPU with a core that
    training does not use (e.g. OMP_NUM_THREADS=1 on 2 cores, as the demo runs)."""
    import torch

    if OVERLAP != "auto":
        return OVERLAP == "on"
    if _gpu_count(device):
        return True
    return (os.cpu_count() or 1) >= 2 * torch.get_num_threads()


# "auto" (the policy above), "on" or "off": a switch for tests and bench/stage_costs.py.
OVERLAP = "auto"


def demo_threads(cpu_count: int | None, cuda: bool) -> int | None:
    """The demo's training threads when the user chose none: half the cores on a CPU with two
    or more, so the other half analyses each finished run beside the next one's training
    (`overlap_analysis`). On 2 cores that is the fastest split measured (bench/stage_costs.py,
    docs/benchmarks.md section 10): the smoke model gains little from a second training thread,
    while evaluation and Grad-CAM run for free beside it. None: keep torch's default (a GPU
    trains, or one core cannot be split)."""
    if cuda or not cpu_count or cpu_count < 2:
        return None
    return cpu_count // 2


def exit_with_parent(poll_s: float = 1.0, grace_s: float = 30.0) -> None:
    """Stop this worker process once the study's process is gone: a SIGKILLed study cannot
    tell its workers, which kept training (issue 20). A daemon thread polls the parent pid;
    SIGTERM first (the default action ends the process; atomic writes leave no half file),
    then a hard exit if a handler kept it alive."""
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="cifarlens-parent-watch", daemon=True).start()


def _overlap_init(threads: int, lock_owner: str) -> None:
    import torch

    exit_with_parent()
    torch.set_num_threads(threads)  # what the study's own process uses: the same numbers
    adopt_locks_of(lock_owner)  # the study holds its runs' locks for this worker


def _overlap_job(run_path: str, figures: bool, failures_top: int | None) -> list[str]:
    """Evaluate one run (and find and explain its failures) in the worker; return the log."""
    lines: list[str] = []
    run = Run(run_path)
    _stage_evaluate(run, lines.append, figures=figures)
    if failures_top is not None:
        # no bar: the study's process draws the training bar on the same terminal
        _stage_failures(run, failures_top, lines.append, progress=False)
    return lines


class _Overlap:
    """One spawned worker process that analyses finished runs, in order, while the study's
    process trains the next. Evaluation is deterministic given the checkpoint, data and thread
    count, so the files are the same as a sequential study's (test_study checks it)."""

    def __init__(self, say) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        import torch

        self.say = say
        self.pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                        initializer=_overlap_init,
                                        initargs=(torch.get_num_threads(), lock_owner()))
        self.jobs: list[tuple[str, Any]] = []

    def submit(self, run: Run, *, figures: bool, failures_top: int | None) -> None:
        self.jobs.append((run.name, self.pool.submit(_overlap_job, str(run.path), figures,
                                                     failures_top)))
        self._report(block=False)

    def _report(self, block: bool) -> None:
        """Logs of finished jobs, in order; a failed job's error is raised here, in the study."""
        while self.jobs and (block or self.jobs[0][1].done()):
            name, fut = self.jobs.pop(0)
            try:
                lines = fut.result()
            except CifarlensError as e:
                raise CifarlensError(f"analysing {name} failed: {e}") from None
            for line in lines:
                self.say(f"[{name}] {line}")

    def wait(self) -> None:
        self._report(block=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# --- parallel runs (--jobs) -----------------------------------------------------------------------


def _gpu_count(device: str) -> int:
    """GPUs a run with this --device would use (0: it runs on the CPU)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


def parallel_slots(jobs: int, device: str, threads: int) -> list[dict[str, Any]]:
    """One slot per concurrent run: on GPUs one GPU each (at most one run per GPU), on the CPU
    the threads divided between them (at least 1 each). Pure but for the GPU count."""
    gpus = _gpu_count(device)
    if gpus:
        return [{"gpu": k, "threads": None} for k in range(min(jobs, gpus))]
    per = max(1, threads // jobs)
    return [{"gpu": None, "threads": per} for _ in range(jobs)]


def _child(job: dict[str, Any], q) -> None:
    """One study run (train + evaluate) in its own spawned process. Reports through `q`."""
    import os

    if job["gpu"] is not None:
        # Before anything initialises CUDA in this process: the run sees only its GPU (cuda:0).
        os.environ["CUDA_VISIBLE_DEVICES"] = str(job["gpu"])
    import torch

    if job["threads"] is not None:
        torch.set_num_threads(job["threads"])  # this process only: the slot's share of the cores
    adopt_locks_of(job["lock_owner"])  # the study holds its runs' locks for this process
    exit_with_parent()
    name = job["name"]

    def log(m: str) -> None:
        q.put(("log", name, m))

    try:
        _stage_train(TrainConfig(**job["config"]), Run(job["run"]), False, log, job["arm"])
        _stage_evaluate(Run(job["run"]), log, figures=job["figures"])
    except CifarlensError as e:
        q.put(("error", name, str(e)))
        return
    except BaseException as e:  # noqa: BLE001 - anything else still has to reach the parent
        q.put(("error", name, f"{type(e).__name__}: {e}"))
        return
    q.put(("done", name, None))


_EPOCH = re.compile(r"^epoch (\d+)/(\d+):")


def _run_parallel(todo: list[tuple[str, TrainConfig, Run]], jobs: int, progress: bool,
                  say) -> None:
    """Train and evaluate the study's runs, up to `jobs` at once, each in a spawned process.

    Each run's numbers depend only on its config and seed, not on what runs beside it; on the
    CPU they are bit-identical to a sequential study when each process gets the same number of
    threads. Finished runs are skipped, and a stopped run resumes from its checkpoint, exactly
    as in a sequential study. Progress: one line per epoch of every run, prefixed with the run
    and followed by its ETA, and a bar over the runs."""
    import multiprocessing as mp
    import queue as queue_mod

    import torch
    from tqdm import tqdm

    pending = [(arm, cfg, run) for arm, cfg, run in todo if not _finished(run)]
    if not pending:
        return
    slots = parallel_slots(jobs, todo[0][1].device, torch.get_num_threads())
    where = (f"one per GPU ({len(slots)} GPUs)" if slots[0]["gpu"] is not None else
             f"{len(slots)} CPU processes with {slots[0]['threads']} thread(s) each")
    say(f"training {len(pending)} runs, up to {len(slots)} at once: {where}")
    ctx = mp.get_context("spawn")  # fork would copy torch's threads and CUDA state
    q = ctx.Queue()
    free = list(range(len(slots)))
    running: dict[str, tuple[Any, int, float]] = {}
    bar = tqdm(total=len(todo), initial=len(todo) - len(pending), desc="study runs", unit="run",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    prog = StudyProgress(len(todo), len(todo) - len(pending),
                         lambda m: (bar.write if progress else say)(m))
    prog.begin()
    try:
        while pending or running:
            while pending and free:
                arm, cfg, run = pending.pop(0)
                slot = free.pop(0)
                name = f"{arm} seed {cfg.seed}"
                job = {"name": name, "arm": arm, "config": dataclasses.asdict(cfg),
                       "lock_owner": lock_owner(),
                       "run": str(run), "figures": cfg.seed == todo[0][1].seed, **slots[slot]}
                p = ctx.Process(target=_child, args=(job, q), name=f"cifarlens {name}")
                p.start()
                running[name] = (p, slot, time.perf_counter())
                say(f"[{name}] started" + (f" on GPU {slots[slot]['gpu']}"
                                           if slots[slot]["gpu"] is not None else ""))
            try:
                kind, name, msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                for name, (p, _, _) in running.items():
                    if not p.is_alive() and p.exitcode != 0:
                        raise CifarlensError(f"run {name} stopped (exit code {p.exitcode}); "
                                             "rerun the study to resume it") from None
                continue
            if kind == "log":
                m = _EPOCH.match(msg)
                if m and name in running:
                    k, n = int(m.group(1)), int(m.group(2))
                    el = time.perf_counter() - running[name][2]
                    msg += f" | run ETA {_fmt_s(el / k * (n - k))}"
                line = msg if msg.startswith(f"[{name}]") else f"[{name}] {msg}"
                (bar.write if progress else say)(line)
                continue
            p, slot, started = running.pop(name)
            p.join()
            free.append(slot)
            if kind == "error":
                raise CifarlensError(f"run {name} failed: {msg}")
            bar.update(1)
            prog.run_done(name, time.perf_counter() - started)
    finally:
        bar.close()
        for p, _, _ in running.values():  # only the processes this study started
            if p.is_alive():
                p.terminate()
            p.join()
        q.close()


def _fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def check_same_environment(runs: list[Run] | list[Path]) -> None:
    """Refuse to compare runs that resolved precision, device or hardware differently."""
    compare_environments([(r.name, r.config.get("environment", {}))
                          for r in map(Run.of, runs)])


def _stage_failures(run: Run | Path, top: int, say, progress: bool = True) -> None:
    """Failures, then Grad-CAM of them, unless already made from the run's current best.pt."""
    from .explain import explain_run
    from .failures import find_failures

    run = Run.of(run)
    if run.current_failures("test") is None:
        find_failures(run, "test", top=top, confident=CONFIDENT, log=say)
    if run.current_explanation("test") is None:
        explain_run(run, "test", failures=top, log=say, progress=progress)


# --- comparison and summary -----------------------------------------------------------------------


def _model_block(run: Run, out: Path) -> dict[str, Any]:
    from .complexity import complexity
    from .models import build_model

    cfg, done = run.config, run.done or {}
    mv, mt = run.metrics("val"), run.metrics("test")
    keys = ("loss", "top1", "top5", "macro_f1", "ece", "mce", "brier")
    c = complexity(build_model(cfg["model"], cfg["num_classes"]))
    ts = mt["temperature_scaling"]
    test = {k: mt[k] for k in keys} | {"nll": mt["loss"],
                                        "top_confusions": mt["top_confusions"][:10]}
    if "superclass" in mt:
        test["superclass"] = {k: mt["superclass"][k] for k in
                              ("coarse_accuracy", "within_superclass_share", "chance_share", "errors",
                               "errors_within_superclass", "binomial_p", "share_ci")
                              if k in mt["superclass"]}
    return {
        # relative to the study, like every other path in summary.json: a moved or copied
        # study still names its runs
        "run": os.path.relpath(run.path, out), "params": c["params"], "flops": c["flops"],
        "best_epoch": done["best_epoch"], "train_time_s": done.get("wall_time_s"),
        "val": {k: mv[k] for k in keys} | {"nll": mv["loss"]}, "test": test,
        "calibration": {"temperature": ts["temperature"], "ece_before": ts["ece_before"],
                        "ece_after": ts["ece_after"], "nll_before": ts["nll_before"],
                        "nll_after": ts["nll_after"], "mce_before": mt["mce"],
                        "mce_after": ts.get("mce_after"), "brier_before": mt["brier"],
                        "brier_after": ts.get("brier_after"),
                        "mce_count_before": mt.get("mce_count"),
                        "mce_count_after": ts.get("mce_count_after")},
    }


def _history(run: Run) -> list[dict[str, Any]]:
    return run.history()


def _seeds_block(runs: dict[str, dict[int, Run]], seeds: list[int], arm: str,
                 acc_a: list[float], acc_b: list[float]) -> dict[str, Any] | None:
    """The verdict about one change: seed s of the baseline and of the variant are paired (same
    split and init), so the paired t-test across seeds covers training noise; per seed, the
    McNemar test and paired interval cover only test-image sampling."""
    if len(seeds) < 2:
        return None
    t = S.paired_seed_test(acc_a, acc_b)
    per_pair = []
    for s in seeds:
        ca_s, cb_s = _correct_pair(runs, s, arm)
        ci = S.accuracy_difference_ci(ca_s, cb_s)
        per_pair.append({"seed": s, **S.mcnemar_exact(ca_s, cb_s),
                         "diff": ci["diff"], "lo": ci["lo"], "hi": ci["hi"]})
    return {"n": t["n_seeds"], "mean_a": t["mean_a"], "std_a": t["std_a"],
            "mean_b": t["mean_b"], "std_b": t["std_b"], "mean_diff": t["mean_diff"],
            "std_diff": t["std_diff"], "t": t["t"], "df": t["df"],
            "p_value": t["p_value"], "ci": [t["lo"], t["hi"]], "level": t["level"],
            "method": t["method"], "note": t.get("note"),
            "covers": "training seeds and test-image sampling",
            "mcnemar_per_seed": per_pair}


def _variant_block(out: Path, plan: dict, runs: dict[str, dict[int, Run]], change: dict,
                   fails: dict, top: int, data, acc_a: list[float], first: bool
                   ) -> dict[str, Any]:
    """One change against the shared baseline: its model, the comparison (the shape of the
    summary's "comparison"), the baseline failures tracked in it, and its own figures. The
    first change's figures keep the one-change names (figures/gradcam_tracking.png); the
    others' carry the slug (figures/gradcam_tracking_SLUG.png, figures/curves_SLUG.png)."""
    from .plots import plot_curves

    seeds, s0, arm = plan["seeds"], plan["seeds"][0], change["slug"]
    ra, rb = runs["baseline"][s0], runs[arm][s0]
    pa, pb = ra.predictions("test"), rb.predictions("test")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError(f"baseline and {arm} were evaluated on different test images")
    ca, cb = pa["pred"] == pa["labels"], pb["pred"] == pb["labels"]
    ma, mb = ra.metrics("test"), rb.metrics("test")
    tag = "" if first else f"_{arm}"
    figs = {"gradcam_tracking": f"figures/gradcam_tracking{tag}.png"}
    if not first:  # the first change's curves are the report's main curves figure
        figs["curves"] = f"figures/curves{tag}.png"
        plot_curves({"baseline": _history(ra), arm: _history(rb)}, out / figs["curves"])
    tracked, tracking = track_failures(ra, rb, fails, top, data, out / figs["gradcam_tracking"])
    model = _model_block(rb, out)
    acc_b = [runs[arm][s].metrics("test")["top1"] for s in seeds]
    model["per_seed"] = [{"seed": s, "test_top1": a} for s, a in zip(seeds, acc_b, strict=True)]
    model["seed"] = s0  # every single-model number in the block is this seed's
    pcc = S.per_class_changes(np.asarray(ma["confusion_matrix"]),
                              np.asarray(mb["confusion_matrix"]), data.class_names, k=10)
    seeds_block = _seeds_block(runs, seeds, arm, acc_a, acc_b)
    return {
        "change": {k: change[k] for k in ("key", "baseline", "variant")}, "slug": arm,
        "runs": [str(runs[arm][s].path.relative_to(out)) for s in seeds],
        "model": model,
        "comparison": {
            # accuracy_difference and mcnemar: the seed-s0 pair only (test-image sampling)
            "pair_seed": s0,
            "verdict_basis": "seeds" if seeds_block else "one_pair",
            "accuracy_difference": S.accuracy_difference_ci(ca, cb),
            "mcnemar": S.mcnemar_exact(ca, cb),
            "per_class": {"improved": [_pc(r) for r in pcc["improved"]],
                          "worsened": [_pc(r) for r in pcc["worsened"]]},
            "ece_change": mb["ece"] - ma["ece"],
            "seeds": seeds_block,
        },
        "failures": {"top": tracked, "tracking": tracking},
        "figures": figs,
    }


ABLATION_ALPHA = 0.05


def ablation_table(variants: list[dict[str, Any]], alpha: float = ABLATION_ALPHA
                   ) -> dict[str, Any]:
    """Every change against the shared baseline, its seed-level p-value Holm-adjusted over the
    number of changes: with K changes tested at 5% each, the chance that at least one "helped"
    or "hurt" is noise grows towards 1 - 0.95^K; Holm keeps that family-wise chance at 5%."""
    ps = [_seeds_p(v) for v in variants]
    adjusted = S.holm(ps)
    rows = []
    for v, p, ph in zip(variants, ps, adjusted, strict=True):
        sb = v["comparison"]["seeds"]
        acc_b = [r["test_top1"] for r in v["model"]["per_seed"]]
        if sb:
            before, after, diff, (lo, hi) = sb["mean_a"], sb["mean_b"], sb["mean_diff"], sb["ci"]
            per_seed = [{k: m[k] for k in ("seed", "diff", "lo", "hi", "a_only", "b_only",
                                           "p_value")} for m in sb["mcnemar_per_seed"]]
        else:  # one seed: the pair's numbers, no seed-level test
            ad = v["comparison"]["accuracy_difference"]
            before, after, diff, lo, hi = ad["acc_a"], ad["acc_b"], ad["diff"], None, None
            mc = v["comparison"]["mcnemar"]
            per_seed = [{"seed": v["comparison"]["pair_seed"], "diff": ad["diff"],
                         "lo": ad["lo"], "hi": ad["hi"], "a_only": mc["a_only"],
                         "b_only": mc["b_only"], "p_value": mc["p_value"]}]
        c = v["change"]
        rows.append({"change": f"{c['key']}={c['variant']}", "key": c["key"], "slug": v["slug"],
                     "baseline_value": c["baseline"], "variant_value": c["variant"],
                     "before": before, "after": after, "diff": diff, "lo": lo, "hi": hi,
                     "p": p, "p_holm": ph, "verdict": S.ablation_verdict(ph, lo, hi, alpha),
                     "n_seeds": len(acc_b), "per_seed_mcnemar": per_seed})
    n = rows[0]["n_seeds"] if rows else 0
    return {"method": (f"paired t-test across {n} seeds per change (baseline seed s paired "
                       f"with variant seed s), p-values Holm-adjusted over {len(rows)} changes; "
                       f"intervals: unadjusted 95% t intervals of the mean difference"),
            "test": "paired_t", "correction": "holm", "m": len(rows), "alpha": alpha,
            "level": 0.95, "covers": "training seeds and test-image sampling",
            "per_seed_covers": "test-image sampling only (McNemar's exact test, one pair)",
            "rows": rows}


def _seeds_p(v: dict[str, Any]) -> float | None:
    sb = v["comparison"]["seeds"]
    return sb.get("p_value") if sb else None


def _freeze_figures(out: Path, figs: dict[str, str]) -> dict[str, str]:
    """Copy every run-level figure the report embeds into STUDY/figures/ (atomically) and point
    at the copy: `cifarlens failures RUN --top 6` or `explain RUN --indices ...` rewrite the run's
    own figures, and must not change what the study's report shows."""
    from ._io import read_bytes, write_bytes

    frozen = {}
    for key, rel in figs.items():
        parts = Path(rel).parts
        if parts and parts[0] == StudyFolder.RUNS:
            copy = Path("figures") / "_".join(parts[1:])  # runs/R/figures/x.png -> R_figures_x.png
            write_bytes(out / copy, read_bytes(out / rel, "figure"))
            rel = str(copy)
        frozen[key] = rel
    return frozen


def build_summary(out: Path, plan: dict, runs: dict[str, dict[int, Run]], top: int,
                  say) -> dict[str, Any]:
    """Every number the report states. The one-change keys ("change", "models", "comparison",
    "failures"["top"/"tracking"], "figures") describe the first (or only) change; "variants"
    holds one such block per change, and "ablation" (2+ changes) the table of all of them."""
    from .plots import plot_curves

    s0 = plan["seeds"][0]
    changes = recorded_changes(plan)
    first = changes[0]["slug"]
    ra, rb = runs["baseline"][s0], runs[first][s0]
    data = ra.data()
    cfg_a = ra.config
    split = ra.split_indices(len(data.train_y))
    pa, pb = ra.predictions("test"), rb.predictions("test")
    if not np.array_equal(pa["indices"], pb["indices"]):
        raise CifarlensError("baseline and variant were evaluated on different test images")
    ma, mb = ra.metrics("test"), rb.metrics("test")
    cm_a, cm_b = np.asarray(ma["confusion_matrix"]), np.asarray(mb["confusion_matrix"])
    figs: dict[str, str] = {}

    def rel(run: Run, name: str) -> str:
        return str(run.file(name).relative_to(out))

    figs["curves"] = "figures/curves.png"
    plot_curves({"baseline": _history(ra), "variant": _history(rb)}, out / figs["curves"])
    figs["confusion_difference"] = "figures/confusion_difference.png"
    S.plot_confusion_difference(cm_a, cm_b, data.class_names, out / figs["confusion_difference"],
                                group_names=data.coarse_names, group_of=data.fine_to_coarse)
    figs["per_class_changes"] = "figures/per_class_changes.png"
    S.plot_per_class_changes(cm_a, cm_b, data.class_names, out / figs["per_class_changes"])
    figs["reliability"] = "figures/reliability.png"
    series = []
    for arm, m, p in (("baseline", ma, pa), ("variant", mb, pb)):
        conf, corr = M.confidences_and_correct(M.softmax(p["logits"]), p["labels"])
        series.append((arm, M.calibration_bins(conf, corr), m["ece"]))
    M.plot_reliability(series, out / figs["reliability"], title="Reliability on test")
    for key, f in (("confusion", ma["figures"]["confusion"]),
                   ("confidence_hist", ma["figures"]["confidence_hist"])):
        figs[key] = rel(ra, f)
    if "confusion_superclass" in ma["figures"]:
        figs["confusion_superclass"] = rel(ra, ma["figures"]["confusion_superclass"])

    fails = ra.failures("test")
    figs["failure_gallery"] = rel(ra, fails["figures"]["gallery"])
    ex = ra.analysis().get("explain_test", {})
    if "gradcam" in ex.get("figures", {}):
        figs["gradcam_failures"] = rel(ra, ex["figures"]["gradcam"])
    if "deletion_insertion" in ex.get("figures", {}):
        figs["deletion_insertion"] = rel(ra, ex["figures"]["deletion_insertion"])
    figs = _freeze_figures(out, figs)

    base_model = _model_block(ra, out)
    acc_a = [runs["baseline"][s].metrics("test")["top1"] for s in plan["seeds"]]
    base_model["per_seed"] = [{"seed": s, "test_top1": a}
                              for s, a in zip(plan["seeds"], acc_a, strict=True)]
    base_model["seed"] = s0  # every single-model number in the block is this seed's
    variants = [_variant_block(out, plan, runs, c, fails, top, data, acc_a, first=i == 0)
                for i, c in enumerate(changes)]
    v0 = variants[0]
    figs["gradcam_tracking"] = v0["figures"]["gradcam_tracking"]
    models = {"baseline": base_model, "variant": v0["model"]}
    faith = ex.get("faithfulness", {})
    fc = faith.get("correct", {})
    explain_block = {
        "layer": ex.get("layer"), "explained": ex.get("explained"),
        "faithfulness": {
            "gradcam": {k: fc.get(k) for k in ("deletion_auc", "insertion_auc")},
            "random": {"deletion_auc": fc.get("random_deletion_auc"),
                       "insertion_auc": fc.get("random_insertion_auc")},
            "failures": {k: faith.get("failures", {}).get(k) for k in ("deletion_auc", "insertion_auc")},
            "correct": {k: fc.get(k) for k in ("deletion_auc", "insertion_auc")},
        },
        # Grad-CAM against each baseline on the reference (correct) images, with paired
        # bootstrap CIs over the images: what describe_faithfulness concludes from
        "faithfulness_tests": {k: fc.get(k) for k in ("n", "level", "noise", "cells",
                                                       "comparisons")} if fc else None,
        "border_share": ex.get("border_share"), "pointing_game": ex.get("pointing_game"),
    }
    env = cfg_a["environment"]
    summary = {
        "title": "cifarlens study", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dataset": data.name, "data_source": data.source, "num_classes": data.num_classes,
        "data_name": data.identity.get("name"),  # the user's own data: what reports call it
        "split": {"train": int(len(split["train"])), "val": int(len(split["val"])),
                  "test": int(len(pa["labels"])), "train_used": int(len(split["train_used"]))},
        "normalization": ra.norm,
        "change": plan["change"], "config": plan["baseline"], "seeds": plan["seeds"],
        "models": models,
        "comparison": v0["comparison"],
        "failures": {
            "split": "test", "total_wrong": fails["total_wrong"],
            "confident_threshold": fails["confident_threshold"],
            "confident_wrong": fails["confident_wrong"],
            "confident_wrong_raw": fails.get("confident_wrong_raw"),
            "confidence_basis": fails.get("confidence_basis"),
            "temperature": fails.get("temperature"),
            "label_error_suspects": fails["label_error_suspects"],
            "label_error_method": fails.get("label_error_method"),
            "cleanlab_issues": fails.get("cleanlab_issues"),
            "top": v0["failures"]["top"], "tracking": v0["failures"]["tracking"],
            "per_class_confident_errors": [{"name": r["name"], "count": r["confident_errors"]}
                                           for r in fails["top_confident_error_classes"]],
        },
        "explain": explain_block, "figures": figs,
        "variants": variants,
        "environment": {k: env.get(k) for k in ("cifarlens", "torch", "python", "device",
                                                 "device_name", "cpu_model", "gpu_model",
                                                 "precision", "git_commit", "threads")},
    }
    if len(variants) >= 2:
        summary["ablation"] = ablation_table(variants)
    return summary


def _pc(r: dict) -> dict:
    return {"name": r["name"], "n": r["n"], "before": r["acc_a"], "after": r["acc_b"],
            "delta": r["delta"]}


def _correct_pair(runs: dict[str, dict[int, Run]], seed: int, arm: str = SINGLE_SLUG
                  ) -> tuple[np.ndarray, np.ndarray]:
    a = runs["baseline"][seed].predictions("test")
    b = runs[arm][seed].predictions("test")
    return a["pred"] == a["labels"], b["pred"] == b["labels"]


def track_failures(ra: Run | Path, rb: Run | Path, fails: dict, top: int, data, fig_path: Path
                   ) -> tuple[list[dict], dict[str, Any]]:
    """What the variant does on each of the baseline's top failures, with both Grad-CAMs.

    The counts come with two references: `all_errors`, the share of ALL baseline test errors the
    variant gets right (the base rate a top-K result is read against), and a split of the
    tracked failures into suspected label errors (`label_suspects`, where "fixed" means the
    variant agrees with a probably wrong label) and the rest (`others`). Confidences are
    temperature-scaled with each model's own validation-fitted T, like failures.py's.
    """
    import torch

    from .failures import scaled_probs
    from .gradcam import gradcam

    ra, rb = Run.open(ra), Run.open(rb)
    pa, pb = ra.predictions("test"), rb.predictions("test")
    probs_b, _ = scaled_probs(rb, "test", pb["logits"])
    top_fails = fails["failures"][:top]
    statuses = ("fixed", "still_wrong", "other_wrong")
    counts: dict[str, Any] = {k: 0 for k in statuses} | {"tracked": len(top_fails)}
    groups = {g: {k: 0 for k in statuses} | {"tracked": 0} for g in ("label_suspects", "others")}
    rows = []
    for f in top_fails:
        i = f["position"]
        vp = int(pb["pred"][i])
        status = "fixed" if vp == f["true"] else "still_wrong" if vp == f["pred"] else "other_wrong"
        counts[status] += 1
        g = groups["label_suspects" if f.get("label_error_suspect") else "others"]
        g[status] += 1
        g["tracked"] += 1
        rows.append({**{k: f.get(k) for k in ("rank", "index", "true_name", "pred_name",
                                              "confidence", "raw_confidence", "margin",
                                              "true_prob", "true_rank", "label_error_suspect")},
                     "variant": {"pred_name": data.class_names[vp],
                                 "confidence": float(probs_b[i, vp]),
                                 "true_prob": float(probs_b[i, f["true"]]), "status": status}})
    wrong_a = pa["pred"] != pa["labels"]
    right_b = pb["pred"] == pb["labels"]
    n_err, n_fix = int(wrong_a.sum()), int((wrong_a & right_b).sum())
    counts.update(groups)
    counts["all_errors"] = {"errors": n_err, "fixed": n_fix,
                            "share": n_fix / n_err if n_err else None}
    if top_fails:
        images, _, _ = ra.split_arrays("test", data)
        pos = np.array([f["position"] for f in top_fails])
        maps = []
        for run, preds in ((ra, np.array([f["pred"] for f in top_fails])), (rb, pb["pred"][pos])):
            maps.append(gradcam(run.model("best"), run.normalize(images[pos]),
                                torch.from_numpy(preds)))
        plot_tracking(images[pos].transpose(0, 2, 3, 1), maps[0], maps[1], rows, fig_path)
    return rows, counts


# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from .cam_figures import model_scale, plot_tracking  # noqa: E402,F401


def demo(out: str | Path, *, seeds: int = DEFAULT_SEEDS, jobs: int = 1, progress: bool = True,
         log=None) -> dict[str, Any]:
    """The smoke study on freshly generated data, 3 seeds per arm: offline, a few minutes on
    2 CPU cores."""
    from .synth import ensure_synthetic

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
