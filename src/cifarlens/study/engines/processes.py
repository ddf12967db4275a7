"""The processes engine (`--jobs N`): runs in spawned worker processes on one machine."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from typing import Any

from cifarlens._io import adopt_locks_of, lock_owner

# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from cifarlens.cam.figures import model_scale, plot_tracking  # noqa: E402,F401
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.study.progress import StudyProgress, fmt_s
from cifarlens.study.stages import run_finished, stage_evaluate, stage_train
from cifarlens.training.config import TrainConfig


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


# --- parallel runs (--jobs) -----------------------------------------------------------------------


def gpu_count(device: str) -> int:
    """GPUs a run with this --device would use (0: it runs on the CPU)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


def parallel_slots(jobs: int, device: str, threads: int) -> list[dict[str, Any]]:
    """One slot per concurrent run: on GPUs one GPU each (at most one run per GPU), on the CPU
    the threads divided between them (at least 1 each). Pure but for the GPU count."""
    gpus = gpu_count(device)
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
        stage_train(TrainConfig(**job["config"]), Run(job["run"]), False, log, job["arm"])
        stage_evaluate(Run(job["run"]), log, figures=job["figures"])
    except CifarlensError as e:
        q.put(("error", name, str(e)))
        return
    except BaseException as e:  # noqa: BLE001 - anything else still has to reach the parent
        q.put(("error", name, f"{type(e).__name__}: {e}"))
        return
    q.put(("done", name, None))


_EPOCH = re.compile(r"^epoch (\d+)/(\d+):")


def run_parallel(todo: list[tuple[str, TrainConfig, Run]], jobs: int, progress: bool,
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

    pending = [(arm, cfg, run) for arm, cfg, run in todo if not run_finished(run)]
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
                    msg += f" | run ETA {fmt_s(el / k * (n - k))}"
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
