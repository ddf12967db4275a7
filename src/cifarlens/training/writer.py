"""Writing an epoch's checkpoint and history without stalling the loop (a background thread)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cifarlens.figures.plots import plot_curves
from cifarlens.runs import (
    Run,
    prune_checkpoints,
    save_checkpoint,
)

# --- per-epoch files, written off the training thread ------------------------------------------------

# Off for a synchronous comparison in bench/epoch_overhead.py; training always uses the thread.
WRITE_IN_BACKGROUND = True


def cpu_copy(obj: Any) -> Any:
    """A CPU copy of nested state (tensors copied, containers rebuilt): what a checkpoint holds,
    frozen at this moment while training keeps changing the originals."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def write_epoch(out: Path, epoch: int, best: dict | None, ckpt: dict, history: list[dict],
                plot: bool) -> None:
    """One epoch's files in crash-safe order: best.pt (if this epoch improved), the resume
    checkpoint (each with its checksum last), pruning, metrics, curves (when due)."""
    run = Run(out)
    if best is not None:
        save_checkpoint(best, run.checkpoint_path("best"))
    save_checkpoint(ckpt, run.epoch_checkpoint_path(epoch))
    prune_checkpoints(out)
    write_history(out, history, plot=plot)


class EpochWriter:
    """Runs write jobs one at a time, in order, on one background thread.

    At most one job waits while one runs: a training thread that outpaces the disk blocks in
    submit() (that wait shows in other_time) instead of piling up copies of the state. After a
    failed job the rest are skipped (a later epoch's files must not overtake a missing one) and
    the error is raised on the training thread at the next submit() or flush(). A SIGKILL at any
    moment leaves what atomic_write promises: complete files or none; a resume takes the newest
    checkpoint whose checksum verifies, and each epoch is seeded, so it replays exactly."""

    def __init__(self, background: bool | None = None):
        if background is None:  # read at construction, so tests and benchmarks can switch it
            background = WRITE_IN_BACKGROUND
        self._error: BaseException | None = None  # raised once on the training thread
        self._failed = False
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="cifarlens-writer", daemon=True) \
            if background else None
        if self._thread:
            self._thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        if not self._failed:
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - re-raised on the training thread
                self._error, self._failed = e, True

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                self._run(job)
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        if self._thread is None:
            self._run(job)
            self._raise()
        else:
            self._q.put(job)

    def flush(self) -> None:
        """Wait until every submitted job is done; raise the first error."""
        if self._thread is not None:
            self._q.join()
        self._raise()

    def close(self) -> None:
        """Finish the queued jobs and stop the thread (errors are left to flush())."""
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


def write_history(out: Path, history: list[dict], plot: bool = True) -> None:
    run = Run(out)
    run.write_history(history)
    if plot:
        plot_curves({"": history}, run.file(Run.CURVES))
