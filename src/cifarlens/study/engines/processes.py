"""The processes engine (`--jobs N`): runs in spawned worker processes on one machine."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from cifarlens._io import adopt_locks_of, lock_owner
from cifarlens.errors import CifarlensError
from cifarlens.study.engines.base import (
    EngineResult,
    RunJob,
    execute,
    exit_with_parent,
    finished,
    gpu_count,
)
from cifarlens.study.progress import StudyProgress, fmt_s

# --- parallel runs (--jobs) -----------------------------------------------------------------------


def parallel_slots(jobs: int, device: str, threads: int) -> list[dict[str, Any]]:
    """One slot per concurrent run: on GPUs one GPU each (at most one run per GPU), on the CPU
    the threads divided between them (at least 1 each). Pure but for the GPU count."""
    gpus = gpu_count(device)
    if gpus:
        return [{"gpu": k, "threads": None} for k in range(min(jobs, gpus))]
    per = max(1, threads // jobs)
    return [{"gpu": None, "threads": per} for _ in range(jobs)]


def _child(job: RunJob, slot: dict[str, Any], owner: str, q) -> None:
    """One study run (train + its analyses) in its own spawned process. Reports through `q`."""
    if slot["gpu"] is not None:
        # Before anything initialises CUDA in this process: the run sees only its GPU (cuda:0).
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot["gpu"])
    import torch

    if slot["threads"] is not None:
        torch.set_num_threads(slot["threads"])  # this process only: the slot's share of the cores
    adopt_locks_of(owner)  # the study holds its runs' locks for this process
    exit_with_parent()

    def log(m: str) -> None:
        q.put(("log", job.label, m))

    try:
        result = execute(job, log)
    except CifarlensError as e:
        q.put(("error", job.label, str(e)))
        return
    except BaseException as e:  # noqa: BLE001 - anything else still has to reach the parent
        q.put(("error", job.label, f"{type(e).__name__}: {e}"))
        return
    q.put(("done", job.label, result))


_EPOCH = re.compile(r"^epoch (\d+)/(\d+):")


class ProcessesEngine:
    """The study's runs, up to `jobs` at once, each in a spawned process on this machine.

    Each run's numbers depend only on its config and seed, not on what runs beside it; on the
    CPU they are bit-identical to a sequential study when each process gets the same number of
    threads. Finished runs are skipped, and a stopped run resumes from its checkpoint, exactly
    as in a sequential study. Progress: one line per epoch of every run, prefixed with the run
    and followed by its ETA, and a bar over the runs."""

    name = "processes"

    def __init__(self, jobs: int, progress: bool = True) -> None:
        if jobs < 1:
            raise CifarlensError("--jobs must be at least 1")
        self.jobs, self.progress = jobs, progress

    def run(self, jobs: Sequence[RunJob], say) -> EngineResult:
        import torch
        from tqdm import tqdm

        res = EngineResult()
        pending = [j for j in jobs if not finished(j)]
        if not pending:
            return res
        slots = parallel_slots(self.jobs, jobs[0].config["device"], torch.get_num_threads())
        where = (f"one per GPU ({len(slots)} GPUs)" if slots[0]["gpu"] is not None else
                 f"{len(slots)} CPU processes with {slots[0]['threads']} thread(s) each")
        say(f"training {len(pending)} runs, up to {len(slots)} at once: {where}")
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="study runs",
                   unit="run", disable=not self.progress, dynamic_ncols=True, file=sys.stderr)
        out = bar.write if self.progress else say
        prog = StudyProgress(len(jobs), len(jobs) - len(pending), out)
        prog.begin()
        try:
            self._loop(pending, slots, res, bar, out, prog)
        finally:
            bar.close()
        return res

    def _loop(self, pending: list[RunJob], slots, res: EngineResult, bar, out, prog) -> None:
        import multiprocessing as mp
        import queue as queue_mod

        ctx = mp.get_context("spawn")  # fork would copy torch's threads and CUDA state
        q = ctx.Queue()
        free = list(range(len(slots)))
        running: dict[str, tuple[Any, int, float]] = {}
        try:
            while pending or running:
                while pending and free:
                    job, slot = pending.pop(0), free.pop(0)
                    p = ctx.Process(target=_child, args=(job, slots[slot], lock_owner(), q),
                                    name=f"cifarlens {job.label}")
                    p.start()
                    running[job.label] = (p, slot, time.perf_counter())
                    out(f"[{job.label}] started" + (f" on GPU {slots[slot]['gpu']}"
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
                    out(_with_eta(msg, name, running))
                    continue
                p, slot, started = running.pop(name)
                p.join()
                free.append(slot)
                if kind == "error":
                    raise CifarlensError(f"run {name} failed: {msg}")
                res.outcomes.append(msg)
                bar.update(1)
                prog.run_done(name, time.perf_counter() - started)
        finally:
            for p, _, _ in running.values():  # only the processes this study started
                if p.is_alive():
                    p.terminate()
                p.join()
            q.close()


def _with_eta(msg: str, name: str, running: dict[str, tuple[Any, int, float]]) -> str:
    """A worker's log line, prefixed with its run, and an epoch line with the run's ETA."""
    m = _EPOCH.match(msg)
    if m and name in running:
        k, n = int(m.group(1)), int(m.group(2))
        el = time.perf_counter() - running[name][2]
        msg += f" | run ETA {fmt_s(el / k * (n - k))}"
    return msg if msg.startswith(f"[{name}]") else f"[{name}] {msg}"
