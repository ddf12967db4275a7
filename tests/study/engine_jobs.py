"""What the engine tests run: the engine seam's RunJob/RunOutcome (as the study defines them in
cifarlens.study.engines.base) and a real `execute`: train a smoke run with resume, evaluate it.

Imported by the tests, by the driver scripts they start, and (by reference, through pickling) by
Ray workers and submitit jobs: keep it importable from tests/study on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESUMED = re.compile(r"^resuming .* after epoch (\d+) ")
ARMS = {"baseline": {}, "variant": {"label_smoothing": 0.0}}


@dataclass(frozen=True)
class RunJob:
    name: str
    run_dir: str
    config: dict
    threads: int
    analyses: tuple[str, ...] = ("evaluate",)


@dataclass(frozen=True)
class RunOutcome:
    name: str
    took_s: float
    host: str
    device: str
    gpu: str | None
    resumed_from: int | None


def study_jobs(study: str | Path, data: str | Path, seeds: int = 2, epochs: int | None = 2,
               names: tuple[str, ...] | None = None, dataset: str = "cifar10",
               extra: dict | None = None) -> list[RunJob]:
    """The 2-arm x `seeds` smoke study the tests run (1 thread per run, the CPU, fp32;
    epochs None: the smoke preset's; `extra`: settings for every run)."""
    from cifarlens.train import make_config

    jobs = []
    for seed in range(seeds):
        for arm, change in ARMS.items():
            name = f"{arm}-s{seed}"
            cfg = make_config("smoke", dataset=dataset, data_dir=str(data), device="cpu",
                              precision="fp32", epochs=epochs, seed=seed,
                              **{**change, **(extra or {})})
            jobs.append(RunJob(name, str(Path(study) / "runs" / name), asdict(cfg), threads=1))
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
        from cifarlens.runs import latest_good_checkpoint

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


def execute(job: RunJob, log: Callable[[str], None], hold: Hold | None = None) -> RunOutcome:
    """Train the run (resuming from its last good epoch), then evaluate it: what a study's
    execute does for a run whose analyses are ("evaluate",)."""
    import torch

    from cifarlens.evaluate import evaluate
    from cifarlens.runs import Run
    from cifarlens.train import TrainConfig, train

    t0 = time.perf_counter()
    torch.set_num_threads(job.threads)
    resumed: list[int] = []

    def say(line: str) -> None:
        m = RESUMED.match(line)
        if m:
            resumed.append(int(m.group(1)))
        log(line)
        if hold is not None:
            hold(job, line)

    cfg = TrainConfig(**job.config)
    train(cfg, job.run_dir, resume=True, progress=False, log=say)
    if "evaluate" in job.analyses:
        evaluate(job.run_dir, ("val", "test"), device=cfg.device, figures=(), log=log)
    env = Run(job.run_dir).config["environment"]
    return RunOutcome(job.name, time.perf_counter() - t0, socket.gethostname(), env["device"],
                      env.get("gpu_model"), resumed[0] if resumed else None)


def run_sequentially(jobs: list[RunJob], hold: Hold | None = None) -> list[RunOutcome]:
    """The reference: the same jobs one after another in this process (what the local engine
    does), each with its own threads."""
    return [execute(j, lambda m, j=j: print(f"[{j.name}] {m}", flush=True), hold) for j in jobs]


def logits_of(run_dir: str | Path) -> np.ndarray:
    with np.load(Path(run_dir) / "predictions_test.npz", allow_pickle=False) as z:
        return z["logits"].copy()
