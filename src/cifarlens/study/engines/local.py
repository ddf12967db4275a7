"""The local engine: runs one after another, each analysed beside the next one's training."""

from __future__ import annotations

import os
import time
from typing import Any

from cifarlens._io import adopt_locks_of, lock_owner

# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from cifarlens.cam.figures import model_scale, plot_tracking  # noqa: E402,F401
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.engines.processes import exit_with_parent, gpu_count
from cifarlens.study.progress import StudyProgress
from cifarlens.study.stages import run_finished, stage_evaluate, stage_failures, stage_train
from cifarlens.training.config import TrainConfig


def run_sequential(todo: list[tuple[str, TrainConfig, Run]], progress: bool, say,
                    timing: dict[str, Any] | None = None, failures_top: int | None = None
                    ) -> None:
    """Train the runs one after another. Each finished run is evaluated (and the first
    baseline's failures explained, with `failures_top`) beside the next run's training when a
    spare core or a GPU makes that free (`overlap_analysis`), else right after it."""
    prog = StudyProgress(len(todo), sum(run_finished(run) for _, _, run in todo), say)
    prog.begin()
    timing = {"train_s": 0.0, "evaluate_s": 0.0} if timing is None else timing
    first_seed = todo[0][1].seed if todo else None
    overlap = _Overlap(say) if todo and overlap_analysis(todo[0][1].device) else None
    timing["overlapped"] = overlap is not None
    try:
        for k, (arm, cfg, run) in enumerate(todo):
            fresh = not run_finished(run)
            t = time.perf_counter()
            stage_train(cfg, run, progress, say, arm)
            t_eval = time.perf_counter()
            timing["train_s"] += t_eval - t
            top = failures_top if k == 0 and arm == "baseline" else None
            if overlap is not None:
                overlap.submit(run, figures=cfg.seed == first_seed, failures_top=top)
            else:
                stage_evaluate(run, say, figures=cfg.seed == first_seed)
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
    if gpu_count(device):
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


def _overlap_init(threads: int, lock_owner: str) -> None:
    import torch

    exit_with_parent()
    torch.set_num_threads(threads)  # what the study's own process uses: the same numbers
    adopt_locks_of(lock_owner)  # the study holds its runs' locks for this worker


def _overlap_job(run_path: str, figures: bool, failures_top: int | None) -> list[str]:
    """Evaluate one run (and find and explain its failures) in the worker; return the log."""
    lines: list[str] = []
    run = Run(run_path)
    stage_evaluate(run, lines.append, figures=figures)
    if failures_top is not None:
        # no bar: the study's process draws the training bar on the same terminal
        stage_failures(run, failures_top, lines.append, progress=False)
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
