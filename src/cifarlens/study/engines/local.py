"""The local engine: runs one after another, each analysed beside the next one's training."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from cifarlens._io import adopt_locks_of, lock_owner
from cifarlens.errors import CifarlensError
from cifarlens.study.engines.base import (
    EngineResult,
    RunJob,
    analysis_phase,
    exit_with_parent,
    finished,
    gpu_count,
    outcome,
    train_phase,
)
from cifarlens.study.progress import StudyProgress


class LocalEngine:
    """Runs one after another in this process. Each finished run is analysed beside the next
    run's training when a spare core or a GPU makes that free (`overlap_analysis`), else right
    after it."""

    name = "local"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, jobs: Sequence[RunJob], say) -> EngineResult:
        res = EngineResult(train_s=0.0, analysis_s=0.0)
        prog = StudyProgress(len(jobs), sum(finished(j) for j in jobs), say)
        prog.begin()
        overlap = _Overlap(say) if jobs and overlap_analysis(jobs[0].config["device"]) else None
        res.overlapped = overlap is not None
        try:
            for job in jobs:
                fresh = not finished(job)
                t = time.perf_counter()
                trained = train_phase(job, say, self.progress)
                t_an = time.perf_counter()
                res.train_s += t_an - t
                if overlap is not None:
                    overlap.submit(job)
                else:
                    analysis_phase(job, say, progress=self.progress)
                    res.analysis_s += time.perf_counter() - t_an
                res.outcomes.append(outcome(job, trained, t_an - t, time.perf_counter() - t_an))
                if fresh:
                    prog.run_done(job.label, time.perf_counter() - t)
            if overlap is not None:
                t_wait = time.perf_counter()
                overlap.wait()  # only the last run's analysis is left to wait for
                res.analysis_s += time.perf_counter() - t_wait
        finally:
            if overlap is not None:
                overlap.close()
        return res


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


def _overlap_job(job: RunJob) -> list[str]:
    """One run's analyses in the worker (no progress bar: the study's process draws the
    training bar on the same terminal); returns the log."""
    lines: list[str] = []
    analysis_phase(job, lines.append, progress=False)
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

    def submit(self, job: RunJob) -> None:
        self.jobs.append((job.name, self.pool.submit(_overlap_job, job)))
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
