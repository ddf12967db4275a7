"""What the Ray and Slurm engine tests run: a small study's real `RunJob`s (from the study's
own plan, `plan_study` + `plan_jobs`), `engines.base.execute` wrapped to stop one run at a known
point, and the reference those engines must equal (the same jobs one after another).

Imported by the tests, by the driver scripts they start, and (by reference, through pickling) by
Ray workers and submitit jobs: keep it importable from tests/study on PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from pathlib import Path

import numpy as np

from cifarlens.runs import latest_good_checkpoint
from cifarlens.study.engines.base import RunJob, RunOutcome, execute
from cifarlens.study.folder import StudyFolder
from cifarlens.study.options import StudyOptions
from cifarlens.study.plan import plan_study
from cifarlens.study.run import plan_jobs

CHANGE = "label_smoothing=0"
RESUMED = re.compile(r"resuming .* after epoch (\d+) ")


def overrides(data: str | Path, epochs: int | None = 2, dataset: str = "cifar10",
              extra: dict | None = None) -> dict:
    """The settings every run of the tests' study has: the CPU, fp32, the given data."""
    over = {"data_dir": str(data), "dataset": dataset, "device": "cpu", "precision": "fp32",
            **(extra or {})}
    if epochs is not None:
        over["epochs"] = epochs
    return over


def study_jobs(study: str | Path, data: str | Path, seeds: int = 2, epochs: int | None = 2,
               names: tuple[str, ...] | None = None, dataset: str = "cifar10",
               extra: dict | None = None, light: bool = True) -> list[RunJob]:
    """The jobs `run_study` would hand an engine for a 2-arm x `seeds` smoke study (light:
    without the first seed's figures and failures, which the engines pass on unchanged)."""
    plan, arms = plan_study("smoke", CHANGE, seeds, overrides(data, epochs, dataset, extra))
    folder = StudyFolder(Path(study).resolve())
    todo = [(arm, dataclasses.replace(cfg, seed=seed), folder.run(arm, seed))
            for seed in plan["seeds"] for arm, cfg in arms.items()]  # as run_study orders them
    jobs = plan_jobs(plan, todo, StudyOptions(failures_top=4))
    if light:
        jobs = [dataclasses.replace(j, figures=False, failures_top=None) for j in jobs]
    return [j for j in jobs if names is None or j.name in names]


class Hold:
    """Stops the named runs right after their epoch-1 checkpoint is on disk, once: writes
    `<marker_dir>/<run>.held` (JSON: pid, host, Ray node) and waits there (at most `hold_s`)
    so a test can kill, preempt or interrupt the run at a known point. A run whose marker
    exists is not held again, so its retry runs through."""

    def __init__(self, names: tuple[str, ...], marker_dir: str, hold_s: float = 60.0) -> None:
        self.names, self.marker_dir, self.hold_s = names, marker_dir, hold_s

    def __call__(self, job: RunJob, line: str) -> None:
        marker = Path(self.marker_dir) / f"{job.name}.held"
        if job.name not in self.names or not line.startswith("epoch 1/") or marker.exists():
            return
        for _ in range(200):  # the epoch's files are written on a background thread
            found = latest_good_checkpoint(Path(job.run_dir))
            if found and found[1]["epoch"] == 1:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{job.name}: no epoch-1 checkpoint after 10 s")
        node = None
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "node": node}))
        tmp.replace(marker)
        deadline = time.monotonic() + self.hold_s
        while time.monotonic() < deadline:
            time.sleep(0.1)


def held_execute(job: RunJob, log, hold: Hold) -> RunOutcome:
    """`engines.base.execute`, its log lines passed through `hold` on the way."""

    def say(line: str) -> None:
        log(line)
        hold(job, line)

    return execute(job, say)


def run_sequentially(jobs: list[RunJob]) -> list[RunOutcome]:
    """The reference: the same jobs one after another in this process (what the local engine
    does), with this process's threads."""
    return [execute(j, lambda m, j=j: print(f"[{j.name}] {m}", flush=True)) for j in jobs]


def resumed_after(log_text: str) -> list[int]:
    """The epochs a run's log says its attempts resumed after."""
    return [int(m) for m in RESUMED.findall(log_text)]


def logits_of(run_dir: str | Path) -> np.ndarray:
    with np.load(Path(run_dir) / "predictions_test.npz", allow_pickle=False) as z:
        return z["logits"].copy()
