"""`--engine slurm`: each run of a study as one Slurm job, through submitit.

submitit is the usual Slurm path of PyTorch research code (DeiT, DINO, MAE ship a
`run_with_submitit.py`): it writes a batch script per job, pickles the call into the job folder
and the result back. Each job trains its run (resuming from the run's last complete epoch),
then makes what the study needs from it; the driver (the study's process) waits, then writes
the report. Faults:
- timeout or preemption: Slurm signals the job (USR2 before the time limit; on preemption with
  SlurmctldParameters=preempt_send_user_signal); submitit calls the job's `checkpoint()`, which
  resubmits the same run: it resumes from its checkpoint, bit-exact (at most `max_requeues`
  timeouts per job, submitit's slurm_max_num_timeout);
- a job that ended without a result (its node failed, it was killed or ran out of memory):
  submitted again, up to `resubmits` times, and it resumes the same way;
- an application error (CifarlensError: bad data, a refused config): never retried; the study
  fails in one line naming the run.
Logs: `STUDY/logs/slurm/<jobid>/` (submitit's output, error and pickles), and
`STUDY/logs/<run>.log` across attempts.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlens._io import lock_owner
from cifarlens.errors import CifarlensError
from cifarlens.study.engines._worker import (
    Log,
    Probe,
    RunFn,
    RunLog,
    Tally,
    WorkerSetup,
    data_folders,
    log_folder,
    make_probe,
    remove_probes,
    run_job,
    study_folders,
)
from cifarlens.study.engines.base import EngineResult, RunJob, RunOutcome, execute

try:  # the base install has no submitit: SlurmEngine.run says how to get it
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - exercised by the install message test
    Checkpointable = object  # type: ignore[misc,assignment]

INSTALL = 'submitit is not installed here: pip install "cifarlens[slurm]"'
NO_SLURM = ("no Slurm here (sbatch is not on PATH): run the study on a Slurm login node, or "
            "use --engine ray or --engine processes")


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise CifarlensError(INSTALL) from None
    return submitit


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_minutes(text: str | int) -> int:
    """A Slurm --time as whole minutes (seconds round up): MM, MM:SS, HH:MM:SS, D-HH,
    D-HH:MM or D-HH:MM:SS (sbatch(1))."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise CifarlensError(f"--slurm-time {text!r}: use minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        secs = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    else:  # MM[:SS]
        secs = a * 60 + (b or 0)
    if secs <= 0:
        raise CifarlensError(f"--slurm-time {text!r} is no time at all")
    return math.ceil(secs / 60)


@dataclass(frozen=True)
class AppError:
    """What a job returns for a CifarlensError: submitit hands a raised error back only as a
    traceback's text, and the study wants its one line."""

    message: str


class SlurmRun(Checkpointable):
    """One run as a Slurm job: the callable submitit pickles. Its `checkpoint()` (called by
    submitit on timeout or preemption) resubmits the same run, which resumes."""

    def __init__(self, fn: RunFn, setup: WorkerSetup, probes: Sequence[Probe] = ()) -> None:
        self.fn, self.setup, self.probes = fn, setup, tuple(probes)

    def __call__(self, job: RunJob) -> RunOutcome | AppError:
        import os

        where = f"Slurm job {os.environ['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in os.environ \
            else "submitit " + os.environ.get("SUBMITIT_LOCAL_JOB_ID", "job")
        try:
            return run_job(job, setup=self.setup, probes=self.probes, where=where, fn=self.fn)
        except CifarlensError as e:
            return AppError(str(e))

    def checkpoint(self, job: RunJob) -> Any:
        from submitit.helpers import DelayedSubmission

        RunLog(job.name, self.setup.log_dir)(
            "requeued (time limit or preemption); the next attempt resumes from the last "
            "complete epoch")
        return DelayedSubmission(self, job)


def _traceback_tail(e: BaseException) -> str:
    """The exception line of a failed job's traceback (submitit's message wraps it)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    bars = [k for k, ln in enumerate(lines) if ln.startswith("-----")]
    if len(bars) >= 2 and bars[1] > 0:
        return lines[bars[1] - 1].strip()
    return lines[0].strip() if lines else type(e).__name__


class SlurmEngine:
    """Runs a study's runs as Slurm jobs, each through `engines.base.execute`. `partition`,
    `gpus_per_run`, `time` (a Slurm --time): the jobs' request; `threads`: torch's threads in
    every run and its --cpus-per-task (default: the study process's, i.e. --threads). The
    jobs' files go to STUDY/logs/slurm (the study folder must be on storage the compute nodes
    share). `cluster`: None for Slurm, "local" (subprocesses on this machine) or "debug" (in
    this process), as submitit names them. `fn`: what each job calls (default `execute`; tests
    wrap it to stop a run at a known point)."""

    name = "slurm"
    poll_s = 5.0  # submitit batches its sacct calls; the driver checks its jobs this often
    resubmits = 2  # a job that ended without a result is submitted again this many times
    max_requeues = 3  # timeouts/preemptions per job before it is given up

    def __init__(self, partition: str | None = None, gpus_per_run: int = 1,
                 time: str | int = "4:00:00", *, threads: int | None = None,
                 cluster: str | None = None, fn: RunFn = execute) -> None:
        self.partition, self.gpus_per_run, self.time = partition, gpus_per_run, str(time)
        self.timeout_min, self.threads, self.cluster, self.fn = (slurm_minutes(time), threads,
                                                                 cluster, fn)
        self.say: Log = lambda m: None

    def check_here(self) -> Any:
        """submitit, and Slurm's sbatch unless a local cluster was asked for: one line each
        when missing (the CLI calls it before the study's plan)."""
        submitit = import_submitit()
        if self.cluster is None and shutil.which("sbatch") is None:
            raise CifarlensError(NO_SLURM)
        return submitit

    def _executor(self, submitit: Any, folder: Path) -> Any:
        folder.mkdir(parents=True, exist_ok=True)
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster or "slurm",
                                   slurm_max_num_timeout=self.max_requeues)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "nodes": 1,
                                  "tasks_per_node": 1, "gpus_per_node": self.gpus_per_run}
        if self.partition:
            params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex

    def run(self, jobs: Sequence[RunJob], say: Log) -> EngineResult:
        """One job per run not finished before; progress through `say` as each finishes.
        Ctrl-C or a failed run cancels the jobs still queued or running; each run keeps its
        last complete epoch, and the next call resumes them."""
        import torch

        self.say = say
        tally = Tally(jobs, say)
        if not tally.pending:
            return tally.result({})
        submitit = self.check_here()
        logs = log_folder(jobs)
        ex = self._executor(submitit, logs / "slurm")
        # Every job checks where it lands that it sees the driver's folders (tokens kept
        # until the end: a job may start hours later, on any node).
        probes = [make_probe(f, must_write=True) for f in study_folders(tally.pending)]
        probes += [make_probe(f) for f in data_folders(tally.pending)]
        setup = WorkerSetup(log_dir=str(logs), lock_owner=lock_owner(),
                            threads=self.threads or torch.get_num_threads())
        try:
            self._wait(ex, SlurmRun(self.fn, setup, probes), tally, submitit)
        finally:
            remove_probes(probes)
        return tally.result({"slurm_partition": self.partition,
                             "slurm_gpus_per_run": self.gpus_per_run,
                             "slurm_time": self.time, "submitit_version": submitit.__version__})

    def _submit(self, ex: Any, task: SlurmRun, job: RunJob) -> Any:
        ex.update_parameters(name=f"cifarlens-{job.name}", cpus_per_task=task.setup.threads)
        return ex.submit(task, job)

    def _wait(self, ex: Any, task: SlurmRun, tally: Tally, submitit: Any) -> None:
        pending = {self._submit(ex, task, job): (job, 0) for job in tally.pending}
        self.say(f"Slurm: {len(pending)} runs submitted as jobs "
                 f"{', '.join(str(sj.job_id) for sj in pending)}; logs in {task.setup.log_dir}")
        tally.begin()
        try:
            while pending:
                for sj in [sj for sj in pending if sj.done()]:
                    job, tries = pending.pop(sj)
                    outcome = self._outcome(submitit, sj, job, tries)
                    if outcome is None:  # lost: once more, resuming
                        again = self._submit(ex, task, job)
                        pending[again] = (job, tries + 1)
                        self.say(f"Slurm: run {job.name} (job {sj.job_id}) ended without a "
                                 f"result ({sj.state}); submitted again as job {again.job_id}, "
                                 "resuming from its last complete epoch")
                        continue
                    tally.done(job, outcome)
                if pending:
                    _time.sleep(self.poll_s)
        except BaseException as e:
            for sj in pending:
                with contextlib.suppress(Exception):  # a job that ended meanwhile
                    sj.cancel(check=False)
            if pending:
                what = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped"
                self.say(f"Slurm: {what}; cancelled {len(pending)} job(s), each run keeps its "
                         "last complete epoch: rerun the study to resume")
            raise

    def _outcome(self, submitit: Any, sj: Any, job: RunJob, tries: int) -> RunOutcome | None:
        """The run's outcome; None for a job to submit again; CifarlensError for a failure."""
        errors = submitit.core.utils
        try:
            result = sj.result()
        except errors.FailedJobError as e:
            raise CifarlensError(f"run {job.name} failed in Slurm job {sj.job_id}: "
                                 f"{_traceback_tail(e)} (log: {sj.paths.stderr})") from None
        except errors.UncompletedJobError:
            if tries < self.resubmits:
                return None
            raise CifarlensError(
                f"run {job.name}: its Slurm job ended without a result {tries + 1} times (last: "
                f"job {sj.job_id}, {sj.state}; log: {sj.paths.stderr}); it keeps its last "
                "complete epoch: rerun the study to resume it") from None
        if isinstance(result, AppError):
            raise CifarlensError(f"run {job.name} failed: {result.message}")
        return result
