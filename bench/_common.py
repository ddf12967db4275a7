"""Shared helpers for the benchmark scripts in bench/ (not part of the cifarlens package)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_SPLIT_IMAGES = 40_000  # CIFAR-100 train set (50,000) minus the 20% validation split
TEST_IMAGES = 10_000


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def random_cifar(n: int, classes: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped data: uint8 (n, 3, 32, 32) images and int64 labels. Throughput does not
    depend on the pixel values, so random bytes stand in for the real set."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, classes, n).astype(np.int64))


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    cpu = _lscpu()
    try:
        mem_kib = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                           if ln.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    flags = cpu.get("Flags", "").split()
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpus": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
        "cpu_bf16": [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "loadavg_1min": loadavg(),
        "git_commit": _git_commit(),
    }
    if device is not None and device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=REPO)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: str | os.PathLike | None, obj: Any) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def project_study_s(per_run_s: float, gpus: int, runs: int = 6, fixed_s: float = 0.0) -> float:
    """Wall time of a study whose `runs` runs go one per GPU, `gpus` at a time (any engine that
    places one run per GPU): its fixed cost (engine start, the driver's summary and report) plus
    one per-run time per wave. A study's runs take about as long as each other: the same preset,
    only the seed and one setting differ. Default: the 3-seed study, 2 arms x 3 seeds."""
    import math

    return fixed_s + math.ceil(runs / gpus) * per_run_s
