"""The runtime every stage shares: where and how a model runs, not what it learns.

Device resolution, precision and autocast, memory layout (channels_last), the compile policy
(eager, CUDA graphs, torch.compile), the torchrun/DDP helpers, batched inference
(`infer_logits`, used by validation, `evaluate` and the explanations) and the environment record
a run keeps. The loop (`training/loop.py`) imports these; evaluation and analysis import this
module, never the loop.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlens._version import __version__
from cifarlens.data.split import normalize
from cifarlens.errors import CifarlensError

__all__ = [
    "COMPILE_COST_S", "COMPILE_MAX_SHARE", "COMPILE_MODES", "Dist", "all_reduce_sum", "autocast",
    "barrier", "compile_model", "cpu_has_bf16", "dist_env", "environment", "git_commit",
    "graph_model", "infer_logits", "init_distributed", "resolve_compile", "resolve_device",
    "resolve_graphs", "resolve_precision", "CHANNELS_LAST",
]

# --- hardware ------------------------------------------------------------------------------------


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise CifarlensError("--device cuda asked for, but no CUDA GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """AMX or AVX-512 BF16 make bf16 autocast pay on the CPU; elsewhere it is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --- torch.compile (the GPU fast path) -------------------------------------------------------------

# torch.compile's first call costs ~40-60 s for these models (Inductor, default mode: the figure
# public CIFAR speedruns report; not yet measured here, docs/benchmarks.md section 6). compile="auto" pays it only on CUDA and only
# when it is at most COMPILE_MAX_SHARE of the estimated run: runs longer than ~8 minutes. A 50-epoch
# paper run on an H200 (about a minute) therefore stays eager; "on"/"off" force the choice.
COMPILE_COST_S = 50.0
COMPILE_MAX_SHARE = 0.10
# off: eager; graphs: CUDA graphs of the eager model (seconds to set up); on: torch.compile.
COMPILE_MODES = ("auto", "off", "graphs", "on")


def resolve_compile(mode: str, device_type: str, est_run_s: float | None = None) -> bool:
    """Whether to torch.compile the training model. Pure: `est_run_s` is the estimated (eager)
    time of the rest of the run, None while it is unknown (then "auto" says no)."""
    if mode not in COMPILE_MODES:
        raise CifarlensError(f"--compile must be auto, off, graphs or on, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return (device_type == "cuda" and est_run_s is not None
            and COMPILE_COST_S <= COMPILE_MAX_SHARE * est_run_s)


def resolve_graphs(mode: str, device_type: str, world: int = 1) -> bool:
    """Whether to train through CUDA graphs (`graph_model`). Pure, decided before any work.

    "auto" takes them for one CUDA process: they remove the ~220 kernel launches of an eager step
    for seconds of set-up, where torch.compile needs ~50 s. Under DDP "auto" stays eager (DDP's
    gradient hooks run inside backward and are not captured; the compile probe decides there).
    "graphs" asked for where they cannot work is a one-line error, never a silent fallback."""
    if mode not in COMPILE_MODES:
        raise CifarlensError(f"--compile must be auto, off, graphs or on, got {mode!r}")
    if mode == "graphs":
        if device_type != "cuda":
            raise CifarlensError(f"--compile graphs needs a CUDA GPU; this run is on {device_type} "
                                 "(use --compile auto or off)")
        if world > 1:
            raise CifarlensError("--compile graphs works for one process only; under torchrun use "
                                 "--compile auto, off or on")
        return True
    return mode == "auto" and device_type == "cuda" and world == 1


def graph_model(model: torch.nn.Module, sample_x: torch.Tensor, device: torch.device,
                precision: str, *, grapher: Callable | None = None) -> torch.nn.Module:
    """The training model with its forward and backward captured as CUDA graphs
    (`torch.cuda.make_graphed_callables`); eval mode still runs the eager forward (validation).

    Set-up is a few warm-up passes plus one capture: seconds. The warm-up passes run the model in
    train mode on `sample_x`, which moves BatchNorm's running statistics: they are restored, so
    graphing changes nothing the run computes (parameters are untouched: the warm-up takes
    gradients with autograd.grad, not into .grad; dropout draws are re-seeded every epoch).
    Input shape, dtype and layout are fixed from here on, as Batches guarantees. `grapher` stands
    in for make_graphed_callables in tests on the CPU."""
    grapher = grapher or torch.cuda.make_graphed_callables
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    # autocast's weight-cast cache must be off while capturing (make_graphed_callables' rule)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                        cache_enabled=False):
        graphed = grapher(model, (sample_x.detach().clone(),))
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(saved[k])
    model.train(was_training)
    return graphed


# Train in channels_last (NHWC) on every device cifarlens resolves to (CPU and CUDA): cuDNN's
# fastest convs want it, and on the CPU oneDNN trains the baseline ~15% faster in it, bf16 and
# fp32 alike (7 of 7 alternating rounds, bench/train_throughput.py; docs/benchmarks.md). Same
# math; only the layout and so the kernels (and the last bits of the results) differ.
CHANNELS_LAST = True


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    # Batch shapes never change (Batches drops the last partial batch), so static shapes: one
    # graph, no recompiles. Only the training forward/backward is compiled; evaluation stays on
    # the eager module (eval mode and batch 1000 would cost a second compile for ~8% of the work).
    return torch.compile(model, dynamic=False)


# --- distributed (torchrun) -----------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int, lo: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = lo - 1
    if value < lo:
        raise CifarlensError(f"environment variable {name}={raw!r} must be an integer >= {lo} "
                             "(torchrun sets it; unset it to train in one process)")
    return value


def dist_env() -> tuple[int, int, int]:
    """(world, rank, local_rank) from torchrun's variables, checked before any work: a bad value
    is a one-line error here, never a traceback later (cmd_train reads RANK after training)."""
    world = _env_int("WORLD_SIZE", 1, 1)
    rank = _env_int("RANK", 0, 0)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    if world > 1:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise CifarlensError(f"WORLD_SIZE={world} but {', '.join(missing)} "
                                 f"{'is' if len(missing) == 1 else 'are'} not set: start "
                                 "multi-process training with torchrun (or unset WORLD_SIZE)")
    if rank >= world:
        raise CifarlensError(f"environment variable RANK={rank} must be below WORLD_SIZE={world}")
    return world, rank, local_rank


def init_distributed(device_name: str) -> Dist:
    world, _, local_rank = dist_env()
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        # The device first: NCCL binds a communicator to the current device; in the other order
        # a rank's first collective (the barrier) could be set up on GPU 0 for every rank.
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# --- evaluation used during training and by `evaluate` --------------------------------------------


@torch.no_grad()
def infer_logits(model: torch.nn.Module, images: np.ndarray | torch.Tensor, mean, std, *,
                 device: torch.device, precision: str = "fp32", batch_size: int = 1000,
                 on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """float32 logits for uint8 NCHW images, in eval mode, on `device`. `on_batch(n)` is
    called after each batch of n images (a progress bar's update)."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(images)
    m = torch.tensor(mean, dtype=torch.float32, device=device)
    s = torch.tensor(std, dtype=torch.float32, device=device)
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb = normalize(x[i:i + batch_size].to(device, non_blocking=True), m, s)
            # NHWC on the CPU too: PyTorch's CPU max-pool is ~8x slower in NCHW, and the smoke
            # model's eval forward 1.7x (vgg in bf16 1.8x) faster in NHWC (docs/benchmarks.md
            # section 3, "Inference layout")
            xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(model(xb).float())
            if on_batch is not None:
                on_batch(len(xb))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)



# --- the environment a run records ---------------------------------------------------------------


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, precision: str, d: Dist) -> dict[str, Any]:
    def cpu_model() -> str:
        """The CPU's model name with family/model/stepping: bf16 (and some fp32) kernels differ
        between CPU generations, and under a hypervisor the name alone is often generic."""
        try:
            info: dict[str, str] = {}
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
                if not line.strip():
                    break  # the first processor is enough
            name = info.get("model name")
            if name:
                ids = ", ".join(f"{k.split()[-1]} {info[k]}" for k in ("cpu family", "model", "stepping")
                                if info.get(k))
                return f"{name} ({ids})" if ids else name
        except OSError:
            pass
        return platform.processor() or platform.machine()

    return {
        "cifarlens": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": np.__version__, "platform": platform.platform(), "processor": platform.machine(),
        "device": str(device), "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "gpu_model": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision, "threads": torch.get_num_threads(), "world_size": d.world,
        "git_commit": git_commit(),
    }
