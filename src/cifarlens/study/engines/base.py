"""The seam between a study and what produces its runs.

The study builds a plan of runs (`RunJob`s: picklable, everything a worker needs) and hands it
to an engine; the engine returns how it went (`EngineResult`). Every engine produces a run the
same way, through `execute` (or its two halves, when it overlaps them), so a run's files do not
depend on which engine made them, and the summary code never knows which one ran. Adding an
engine is one module with a class that has `name` and `run(jobs, say)`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cifarlens.pipeline import (
    ensure_evaluated,
    ensure_explained,
    ensure_features,
    ensure_neighbours,
    ensure_robustness,
    ensure_trained,
)
from cifarlens.runs import Run
from cifarlens.stages.robustness import RobustnessRequest, current_robustness
from cifarlens.training.config import TrainConfig

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunJob:
    """One run of the study and what the study needs from it after training."""

    name: str                 # "baseline-s0"
    arm: str                  # "baseline", "variant" or a change's slug
    seed: int
    run_dir: str              # absolute: workers may start in another folder
    config: dict[str, Any]    # the TrainConfig as a dict (dataclasses.asdict)
    figures: bool = False     # draw the run's test figures (the report shows the first seed's)
    failures_top: int | None = None   # find and explain this many failures (the first baseline)
    neighbours: bool = False  # features of train and test (the first seed: the change's view),
    #                           and with failures_top their nearest training images
    robustness: RobustnessRequest | None = None  # accuracy under corruption (every run, asked)

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.config)

    def run(self) -> Run:
        return Run(self.run_dir)


@dataclass(frozen=True)
class RunOutcome:
    """What producing one run did, and where: the study records it (study.json, the report's
    reproducibility section)."""

    name: str
    trained: bool             # False: the run had finished before (a resumed study)
    train_s: float
    analysis_s: float
    host: str
    device: str | None
    gpu: str | None

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EngineResult:
    outcomes: list[RunOutcome] = field(default_factory=list)
    # wall seconds in training and in the runs' analyses, where the engine can tell them apart
    # (several runs at once: only their total is known)
    train_s: float | None = None
    analysis_s: float | None = None
    overlapped: bool = False
    # what the study records of the engine beyond its name (EngineRecord's optional fields:
    # e.g. the Ray cluster and version, or the Slurm request and submitit's version)
    record: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def run(self, jobs: Sequence[RunJob], say: Log) -> EngineResult: ...


def train_phase(job: RunJob, log: Log, progress: bool = False) -> bool:
    """Train the job's run (resuming); True when it trained now."""
    return ensure_trained(job.train_config(), job.run(), progress=progress, log=log)


def analysis_phase(job: RunJob, log: Log, progress: bool = False) -> None:
    """What the study needs from a trained run: predictions and metrics of both splits, for
    the job that asks, its failures and their Grad-CAM, its features and neighbours, and its
    accuracy under corruption."""
    run = job.run()
    ensure_evaluated(run, ("val", "test"), figures=("test",) if job.figures else (),
                     progress=progress, log=log)
    if job.failures_top is not None:
        ensure_explained(run, "test", failures=job.failures_top, progress=progress, log=log)
    if job.neighbours:
        ensure_features(run, ("train", "test"), progress=progress)
        if job.failures_top is not None:
            ensure_neighbours(run, "test", top=job.failures_top, progress=progress, log=log)
    if job.robustness is not None:
        ensure_robustness(run, job.robustness, progress=progress, log=log)


def outcome(job: RunJob, trained: bool, train_s: float, analysis_s: float) -> RunOutcome:
    env = job.run().config.get("environment", {})
    return RunOutcome(name=job.name, trained=trained, train_s=train_s, analysis_s=analysis_s,
                      host=socket.gethostname(), device=env.get("device"),
                      gpu=env.get("gpu_model"))


def execute(job: RunJob, log: Log, progress: bool = False) -> RunOutcome:
    """Produce one run: train it (resuming), then its analyses. Engines that run a whole job
    in a worker call this; application errors (CifarlensError) propagate as they are."""
    t0 = time.perf_counter()
    trained = train_phase(job, log, progress)
    t1 = time.perf_counter()
    analysis_phase(job, log, progress=False)
    return outcome(job, trained, t1 - t0, time.perf_counter() - t1)


def finished(job: RunJob) -> bool:
    """Trained and evaluated (and evaluated under corruption, where asked): what a resumed study
    skips."""
    run = job.run()
    return (run.is_done() and all(run.has(Run.metrics_name(s)) for s in ("val", "test"))
            and (job.robustness is None or current_robustness(run, job.robustness) is not None))


# --- what every engine's workers share ------------------------------------------------------


def gpu_count(device: str) -> int:
    """GPUs a run with this --device would use (0: it runs on the CPU)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


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
