"""Training: the seed report's recipe, reproducible, resumable, on CPU, one GPU or many (torchrun).

Recipe (`paper` preset): SGD momentum 0.9, lr 0.05 with a 1-epoch linear warm-up then cosine
annealing to 0 (per step), weight decay 5e-4, cross-entropy with label smoothing 0.1, batch 128,
50 epochs. Each epoch is seeded by (seed, epoch), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from ._io import RunLock, read_json, save_figure, write_json, write_text
from .data import (
    AUGMENTS,
    Batches,
    CifarData,
    channel_stats,
    load_dataset,
    normalize,
    stratified_split,
    stratified_subset,
)
from .errors import CifarlensError
from .models import MODELS, build_model, check_model_source, is_user_model, model_source
from .runs import (
    CKPT_DIR,
    check_data_identity,
    latest_good_checkpoint,
    prune_checkpoints,
    read_config,
    read_norm,
    save_checkpoint,
)


@dataclass
class TrainConfig:
    dataset: str = "cifar100"
    model: str = "baseline"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    augment: str = "none"
    # the augments' own settings (augment.py): used only by cutout, mixup, cutmix respectively
    cutout_size: int = 8  # DeVries & Taylor's CIFAR-100 size (16 for CIFAR-10)
    mixup_alpha: float = 1.0  # Zhang et al.'s CIFAR value
    cutmix_alpha: float = 1.0  # Yun et al.'s CIFAR value
    seed: int = 0
    val_fraction: float = 0.2
    train_limit: int | None = None
    # How to run, not what to learn: these may differ between runs that are compared.
    device: str = "auto"
    precision: str = "auto"
    eval_batch_size: int = 1000
    compile: str = "auto"
    data_dir: str | None = None


# Settings that change what is learned; `study --change` may vary exactly one of them.
TRAINING_SETTINGS = ("dataset", "model", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                     "label_smoothing", "warmup_epochs", "augment", "val_fraction", "train_limit",
                     "cutout_size", "mixup_alpha", "cutmix_alpha")
RUNTIME_SETTINGS = ("device", "precision", "eval_batch_size", "compile", "data_dir")

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # ~15 min on a 2-core CPU: the paper model and recipe on a 10k-image class-balanced subset.
    "quick": {"epochs": 10, "train_limit": 10_000},
    # Seconds, for tests and the demo: the quarter-width model on generated data.
    "smoke": {"model": "small", "epochs": 6, "batch_size": 64, "lr": 0.05, "warmup_epochs": 0.5},
}


def make_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    if preset not in PRESETS:
        raise CifarlensError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    cfg = TrainConfig(**PRESETS[preset])
    for k, v in overrides.items():
        if v is None and k != "train_limit":
            continue
        if k not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise CifarlensError(f"unknown setting {k!r}")
        setattr(cfg, k, v)
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    checks = [
        (cfg.model in MODELS or is_user_model(cfg.model), f"unknown model {cfg.model!r}; choose "
         f"from: {', '.join(MODELS)}, or give your own as PACKAGE.MODULE:FACTORY"),
        (cfg.augment in AUGMENTS, f"unknown augment {cfg.augment!r}; choose from: {', '.join(AUGMENTS)}"),
        (cfg.epochs >= 1, "--epochs must be at least 1"),
        (0 <= cfg.seed < 2**32, "--seed must be an integer from 0 to 4294967295"),
        (cfg.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), "--lr must be a positive number"),
        (cfg.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 <= cfg.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (0 <= cfg.momentum < 1, "momentum must be in [0, 1)"),
        (cfg.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
        (0 < cfg.val_fraction < 1, "val_fraction must be in (0, 1)"),
        (cfg.train_limit is None or cfg.train_limit >= 1, "--train-limit must be positive"),
        (cfg.cutout_size >= 1, "--cutout-size must be at least 1"),
        (cfg.mixup_alpha > 0 and math.isfinite(cfg.mixup_alpha), "--mixup-alpha must be > 0"),
        (cfg.cutmix_alpha > 0 and math.isfinite(cfg.cutmix_alpha), "--cutmix-alpha must be > 0"),
        (cfg.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
        (cfg.compile in COMPILE_MODES, "--compile must be auto, off, graphs or on"),
        (cfg.eval_batch_size >= 1, "eval batch size must be at least 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise CifarlensError(msg)
    if is_user_model(cfg.model):  # import it now: a bad factory fails before any file is written
        from .models import resolve_factory

        resolve_factory(cfg.model)


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

# torch.compile's first call costs ~40-60 s for these models (Inductor, default mode; see
# /work/shared/notes/anchors-training.md section 5). compile="auto" pays it only on CUDA and only
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


def use_channels_last(device: torch.device) -> bool:
    """Train in channels_last (NHWC) everywhere: cuDNN's fastest convs want it, and on the CPU
    oneDNN trains the baseline ~15% faster in it, bf16 and fp32 alike (7 of 7 alternating
    rounds, bench/train_throughput.py; docs/benchmarks.md). Same math; only the layout and so
    the kernels (and the last bits of the results) differ."""
    return device.type in ("cuda", "cpu")


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    # Batch shapes never change (Batches drops the last partial batch), so static shapes: one
    # graph, no recompiles. Only the training forward/backward is compiled; evaluation stays on
    # the eager module (eval mode and batch 1000 would cost a second compile for ~8% of the work).
    return torch.compile(model, dynamic=False)


class _CompileProbe:
    """compile="auto" on CUDA: time ~20 eager steps early in the first epoch (after 4 warm-up steps,
    which include cuDNN autotuning), estimate the rest of the run, and say whether to compile.
    Under DDP the estimate is averaged over ranks so that every rank makes the same choice."""

    def __init__(self, steps_per_epoch: int, steps_left: int, device: torch.device, d: Dist):
        self.start = min(4, max(0, steps_per_epoch - 2))
        self.end = min(self.start + 20, steps_per_epoch - 1)
        self.steps_left, self.device, self.d = steps_left, device, d
        self.t0 = 0.0
        self.est_s: float | None = None

    def after_step(self, i: int) -> bool | None:
        """Call after step i of the first epoch; returns the decision once, else None."""
        if i not in (self.start, self.end):
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # twice per run: host time = device time here
        if self.end <= self.start:  # an epoch too short to time: a tiny run, stay eager
            return False
        if i == self.start:
            self.t0 = time.perf_counter()
            return None
        per_step = (time.perf_counter() - self.t0) / max(1, self.end - self.start)
        est = all_reduce_sum(torch.tensor([per_step * self.steps_left], dtype=torch.float64,
                                          device=self.device), self.d).item() / self.d.world
        self.est_s = est
        return resolve_compile("auto", self.device.type, est)


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
                 device: torch.device, precision: str = "fp32", batch_size: int = 1000) -> torch.Tensor:
    """float32 logits for uint8 NCHW images, in eval mode, on `device`."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(images)
    m = torch.tensor(mean, dtype=torch.float32, device=device)
    s = torch.tensor(std, dtype=torch.float32, device=device)
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb = normalize(x[i:i + batch_size].to(device, non_blocking=True), m, s)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(model(xb).float())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


# --- the run ---------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


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


def learned_settings(config: dict) -> dict[str, Any]:
    """A recorded config's training settings (and seed); a setting added after the run was made
    takes its default, which is what that run used."""
    default = dataclasses.asdict(TrainConfig())
    return {k: config.get(k, default[k]) for k in TRAINING_SETTINGS + ("seed",)}


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(setting, a's value, b's value) for each training setting or seed that differs: the one
    comparison behind both the study's one-change guard and resume's same-settings check."""
    a, b = learned_settings(a), learned_settings(b)
    return [(k, a[k], b[k]) for k in TRAINING_SETTINGS + ("seed",) if a[k] != b[k]]


def _diff_configs(a: dict, b: dict) -> list[str]:
    return [f"{k}: {x!r} -> {y!r}" for k, x, y in config_diff(a, b)]


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool = True,
          data: CifarData | None = None, log=None) -> dict[str, Any]:
    """Train one model into run folder `out`; returns the final summary (also done.json)."""
    validate_config(cfg)
    out = Path(out)
    d = init_distributed(cfg.device)
    resolve_graphs(cfg.compile, resolve_device(cfg.device, d.local_rank).type, d.world)  # up front
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not d.main:
        say = lambda msg: None  # noqa: E731
    lock = RunLock(out) if d.main else None
    created = not out.exists()
    if lock:
        if (out / "config.json").exists() and not resume:
            raise CifarlensError(f"{out} already holds a run; use --resume to continue it or "
                                 "choose another --out")
        lock.acquire()
    try:
        return _train(cfg, out, d, resume=resume, progress=progress and d.main, data=data, say=say)
    finally:
        if lock:
            lock.release()
            # refused before its first file (bad data, a too-small --train-limit): leave no
            # empty run folder behind that a later --resume or a reader would trip over
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()


def _train(cfg: TrainConfig, out: Path, d: Dist, *, resume: bool, progress: bool,
           data: CifarData | None, say) -> dict[str, Any]:
    from tqdm import tqdm

    device = resolve_device(cfg.device, d.local_rank)
    precision = resolve_precision(cfg.precision, device)
    graphs = resolve_graphs(cfg.compile, device.type, d.world)  # refuses bad choices up front
    # Best-epoch choice on the numbers `evaluate` reports (fp32): on CUDA that costs little; on the
    # CPU fp32 validation would cost ~1.8x the bf16 one (docs/benchmarks.md), so there it runs in
    # the training precision and done.json says so (val_precision).
    val_precision = "fp32" if device.type == "cuda" else precision
    if device.type == "cuda":
        # Batch shapes are fixed (the last partial batch is dropped), so cuDNN's autotuner pays for
        # itself after the first steps; TF32 for fp32 matmuls ("high") when precision is fp32.
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    if precision == "bf16" and device.type == "cpu" and cfg.precision == "bf16" and not cpu_has_bf16():
        say("note: this CPU has no native bf16; bf16 will be slow")
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, progress=progress)
    if data.name != cfg.dataset:
        raise CifarlensError(f"data is {data.name}, config says {cfg.dataset}")

    # Resume state, or a fresh start with split and statistics written first.
    state = None
    if resume and (out / "config.json").exists():
        old = read_config(out)
        diffs = _diff_configs(old["config"], dataclasses.asdict(cfg))
        if diffs:
            raise CifarlensError(f"cannot resume {out} with different settings: {'; '.join(diffs)}")
        check_data_identity(out, old, data)
        check_model_source(old.get("model_source"), cfg.model, str(out))
        if (out / "done.json").exists():
            say(f"{out} is already finished; nothing to do")
            return read_json(out / "done.json")
        found = latest_good_checkpoint(out, warn=say)
        if found:
            state = found[1]
            say(f"resuming {out} after epoch {state['epoch']} ({found[0].name})")
    if state is None:
        train_idx, val_idx = stratified_split(data.train_y, cfg.val_fraction, cfg.seed)
        used = train_idx if cfg.train_limit is None else \
            stratified_subset(data.train_y, train_idx, cfg.train_limit, cfg.seed)
        if d.main:  # other ranks read norm.json after the barrier (saves ~1 GB of float64 each)
            from ._io import save_npz

            mean, std = channel_stats(data.train_x[used])

            save_npz(out / "split.npz", train=train_idx, val=val_idx, train_used=used)
            write_json(out / "norm.json", {"mean": mean, "std": std, "computed_on": "train_used"})
            write_json(out / "config.json", {
                "config": dataclasses.asdict(cfg), "model": cfg.model,
                "model_source": model_source(cfg.model), "dataset": cfg.dataset,
                "num_classes": data.num_classes, "class_names": data.class_names,
                "data_source": data.source, "data_dir": str(data.folder.resolve().parent),
                "data_identity": data.identity,
                "seed": cfg.seed, "environment": environment(device, precision, d),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
        barrier(d)
    from .runs import load_split_indices

    split = load_split_indices(out, len(data.train_y))
    used, val_idx = split["train_used"], split["val"]
    norm = read_norm(out)
    mean, std = norm["mean"], norm["std"]

    # Each rank holds its own shard of the training split on its device.
    if d.world > 1:
        perm = np.random.default_rng(cfg.seed).permutation(len(used))
        shard_len = len(used) // d.world
        used = used[perm[d.rank::d.world][:shard_len]]
        val_idx = val_idx[d.rank::d.world]
    if cfg.batch_size % d.world:
        raise CifarlensError(f"--batch-size {cfg.batch_size} must divide by the {d.world} processes")
    local_bs = cfg.batch_size // d.world
    channels_last = use_channels_last(device)
    batches = Batches(data.train_x[used], data.train_y[used], local_bs, mean, std, device=device,
                      augment=cfg.augment, seed=cfg.seed * 1000 + d.rank,
                      channels_last=channels_last, num_classes=data.num_classes,
                      cutout_size=cfg.cutout_size, mixup_alpha=cfg.mixup_alpha,
                      cutmix_alpha=cfg.cutmix_alpha)
    steps = len(batches)
    if steps == 0:
        raise CifarlensError("training split is empty")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_kw: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    # Weight decay on conv/linear weights only: BN and bias decay hurts and is not in the recipe.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, **opt_kw)
    total_steps = cfg.epochs * steps
    warmup = int(round(cfg.warmup_epochs * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup))
    history: list[dict] = []
    best_acc, best_epoch, start_epoch = -1.0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = list(state["history"])
        best_acc, best_epoch, start_epoch = state["best_val_acc"], state["best_epoch"], state["epoch"]

    train_model: torch.nn.Module = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    compiled = resolve_compile(cfg.compile, device.type)  # "auto" decides after timing (probe)
    step_mode = "compile" if compiled else "eager"
    if graphs:
        t_graph = time.perf_counter()
        sample_x, _ = next(iter(batches.epoch(0)))
        try:
            train_model = graph_model(model, sample_x, device, precision)
            step_mode = "graphs"
            say(f"CUDA graphs captured in {time.perf_counter() - t_graph:.1f} s")
        except Exception as e:  # noqa: BLE001 - any capture failure: eager still trains correctly
            if cfg.compile == "graphs":
                raise CifarlensError(f"--compile graphs: capturing CUDA graphs failed: "
                                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                     ) from None
            say(f"note: CUDA graphs failed ({type(e).__name__}); training eagerly")
        del sample_x
    step_fn = _make_step(compile_model(train_model) if compiled else train_model, opt, sched, cfg,
                         device, precision, total_steps)
    probe = _CompileProbe(steps, total_steps - start_epoch * steps, device, d) \
        if cfg.compile == "auto" and device.type == "cuda" and step_mode == "eager" else None

    ckpt_dir = out / CKPT_DIR
    # Validation images live on the device as uint8 (copied once, not every epoch: 30 MB for the
    # paper split) and are normalized batch by batch there.
    val_x = torch.from_numpy(np.ascontiguousarray(data.train_x[val_idx])).to(device)
    val_y = torch.from_numpy(np.asarray(data.train_y[val_idx], dtype=np.int64)).to(device)
    run_start = time.perf_counter()
    last_plot = -math.inf
    say(f"training {cfg.model} on {cfg.dataset} ({data.source} data): {len(split['train_used'])} "
        f"train / {len(split['val'])} val images, {cfg.epochs} epochs x {steps} steps of "
        f"{cfg.batch_size}, {device} {precision}" + (f", {d.world} processes" if d.world > 1 else "")
        + (f", {step_mode}" if device.type == "cuda" else ""))
    writer = EpochWriter(background=WRITE_IN_BACKGROUND) if d.main else None
    t_mark = time.perf_counter()  # end of the previous epoch's row: epoch_time runs from here
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # dropout draws: same with or without resume; each rank its own (rank 0 = single process)
            torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * d.rank)
            model.train()
            t0 = time.perf_counter()
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       disable=not progress, leave=False, dynamic_ncols=True, file=sys.stderr)
            for i, (xb, yb) in enumerate(batches.epoch(epoch)):
                step_fn(xb, yb, sums)
                if probe is not None and (go := probe.after_step(i)) is not None:
                    if go:
                        say(f"compiling the model (--compile auto: run estimated at "
                            f"{_fmt_time(probe.est_s or 0)}, compile ~{COMPILE_COST_S:.0f} s)")
                        step_fn = _make_step(compile_model(train_model), opt, sched, cfg, device,
                                             precision, total_steps)
                        step_mode = "compile"
                    probe = None
                bar.update(1)
                if epoch == start_epoch and i == min(9, steps - 1):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)  # once: the estimate needs device time
                    per_step = (time.perf_counter() - t0) / (i + 1)
                    est = per_step * steps * (cfg.epochs - start_epoch) * 1.1
                    say(f"estimated time for the run: {_fmt_time(est)}")
                if i % 25 == 0 and progress:
                    bar.set_postfix(img_s=f"{(i + 1) * cfg.batch_size / (time.perf_counter() - t0):.0f}")
            bar.close()
            sums = all_reduce_sum(sums, d)
            tr_loss, tr_correct, tr_n = sums.tolist()  # one host sync per epoch
            if not math.isfinite(tr_loss):
                raise CifarlensError(
                    f"training diverged: loss became {tr_loss} in epoch {epoch + 1}; the last good "
                    f"checkpoint is kept in {ckpt_dir} (try a lower --lr)")
            t_val = time.perf_counter()
            train_time = t_val - t0
            vl = _validate(model, val_x, val_y, mean, std, cfg, device, val_precision, d)
            if not math.isfinite(vl["val_loss"]):  # the epoch's last steps broke the weights
                raise CifarlensError(
                    f"training diverged: validation loss became {vl['val_loss']} in epoch "
                    f"{epoch + 1}; the last good checkpoint is kept in {ckpt_dir} (try a lower --lr)")
            now = time.perf_counter()
            val_time, epoch_time, t_mark = now - t_val, now - t_mark, now
            # other_time: everything but training steps and validation since the previous row,
            # i.e. the previous epoch's bookkeeping (checkpoint hand-off, logs) and this one's setup.
            row = {"epoch": epoch + 1, "train_loss": tr_loss / tr_n, "train_acc": tr_correct / tr_n,
                   **vl, "lr": opt.param_groups[0]["lr"], "epoch_time": epoch_time,
                   "train_time": train_time, "val_time": val_time,
                   "other_time": max(0.0, epoch_time - train_time - val_time),
                   "images_per_s": tr_n / train_time}
            history.append(row)
            improved = row["val_acc"] > best_acc
            if improved:
                best_acc, best_epoch = row["val_acc"], epoch + 1
            if d.main:
                assert writer is not None
                base = {"model_name": cfg.model, "num_classes": data.num_classes,
                        "dataset": cfg.dataset, "epoch": epoch + 1, "val_acc": row["val_acc"]}
                # A CPU copy of the state, taken now: training goes on while the writer saves it.
                # The best weights are this same copy, written (best.pt) with this checkpoint.
                snap = cpu_copy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict()})
                hist = [dict(r) for r in history]
                # The curve figure costs ~0.4 s of CPU: redraw it at most every PLOT_EVERY_S (a
                # person glancing at it) and always after the last epoch; metrics every epoch.
                plot = epoch + 1 == cfg.epochs or now - last_plot >= PLOT_EVERY_S
                last_plot = now if plot else last_plot
                writer.submit(lambda e=epoch + 1, b=({**base, "model": snap["model"]}
                                                     if improved else None),
                              c={**base, **snap, "history": hist, "best_val_acc": best_acc,
                                 "best_epoch": best_epoch}, h=hist, pl=plot:
                              write_epoch(out, e, b, c, h, pl))
                say(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.3f} acc "
                    f"{row['train_acc']:.3f} | val loss {row['val_loss']:.3f} acc "
                    f"{row['val_acc']:.3f} | {row['images_per_s']:.0f} img/s, "
                    f"{_fmt_time(row['epoch_time'])}")
            barrier(d)
        t_flush = time.perf_counter()
        if writer is not None:
            writer.flush()  # the last epoch's files are complete before done.json (or its error)
        final_write_s = time.perf_counter() - t_flush
    except KeyboardInterrupt:
        say(f"interrupted: {out} keeps every complete epoch; continue with --resume")
        raise
    finally:
        if writer is not None:
            writer.close()  # waits for queued epochs: every completed epoch is kept
    if d.main and history and start_epoch >= cfg.epochs:
        # killed after the last checkpoint, before the files that follow it: finish those
        prune_checkpoints(out)
        write_history(out, history)
    summary = {"finished": True, "epochs": cfg.epochs, "best_epoch": best_epoch,
               "best_val_acc": best_acc, "final": history[-1] if history else None,
               "wall_time_s": time.perf_counter() - run_start, "final_write_s": final_write_s,
               "step_mode": step_mode, "val_precision": val_precision}
    if d.main:
        write_json(out / "done.json", summary)
    barrier(d)
    return summary


# --- per-epoch files, written off the training thread ------------------------------------------------

# Off for a synchronous comparison in bench/epoch_overhead.py; training always uses the thread.
WRITE_IN_BACKGROUND = True
PLOT_EVERY_S = 30.0


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
    ckpt_dir = out / CKPT_DIR
    if best is not None:
        save_checkpoint(best, ckpt_dir / "best.pt")
    save_checkpoint(ckpt, ckpt_dir / f"ckpt-e{epoch:04d}.pt")
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

    def __init__(self, background: bool = True):
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


def _make_step(model, opt, sched, cfg: TrainConfig, device, precision, total_steps):
    # yb is int64 labels, or for mixup/cutmix float soft targets lam*onehot(a)+(1-lam)*onehot(b):
    # cross-entropy with those (label smoothing applied to them) is lam*CE(a) + (1-lam)*CE(b).
    # Train accuracy counts a mixed image as right when the prediction is its larger-weight
    # label (argmax of the target; an exact 0.5 tie goes to the lower class index).
    def step(xb: torch.Tensor, yb: torch.Tensor, sums: torch.Tensor) -> None:
        with autocast(device, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():  # accumulate on the device: no host sync inside the loop
            n = yb.shape[0]
            sums[0] += loss.detach().double() * n
            sums[1] += (logits.argmax(1) == (yb if yb.ndim == 1 else yb.argmax(1))).sum()
            sums[2] += n

    return step


def _validate(model, val_x, val_y, mean, std, cfg, device, precision, d: Dist) -> dict[str, float]:
    if len(val_x):
        logits = infer_logits(model, val_x, mean, std, device=device, precision=precision,
                              batch_size=cfg.eval_batch_size)
        y = val_y.to(device)
        s = torch.stack([
            F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum").double(),
            F.cross_entropy(logits, y, reduction="sum").double(),
            (logits.argmax(1) == y).sum().double(),
            torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    else:
        s = torch.zeros(4, dtype=torch.float64, device=device)
    loss, nll, correct, n = all_reduce_sum(s, d).tolist()
    n = max(n, 1.0)
    return {"val_loss": loss / n, "val_nll": nll / n, "val_acc": correct / n}


def write_history(out: Path, history: list[dict], plot: bool = True) -> None:
    import json

    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    buf = io.StringIO()
    # every key of every row: a run resumed from an older version's checkpoint has rows without
    # the newer timing columns (left empty)
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in history for k in r)), restval="")
    w.writeheader()
    w.writerows(history)
    write_text(out / "metrics.csv", buf.getvalue())
    if plot:
        plot_curves({"": history}, out / "curves.png")


def plot_curves(runs: dict[str, list[dict]], path: Path) -> None:
    """Loss and accuracy, train vs val, for one run or several on the same axes. Each run has
    its arm's colour (figures.arm_color: baseline and variant as in every figure); train is
    dashed, validation solid."""
    from .figures import CURVE_STYLES, arm_color, new_figure

    fig, (ax_l, ax_a) = new_figure(1, 2, figsize=(9, 3.4))
    for k, (name, hist) in enumerate(runs.items()):
        ep = [r["epoch"] for r in hist]
        color = arm_color(name, k)
        tag = f"{name} " if name else ""
        for kind in ("train", "val"):
            ls = CURVE_STYLES[kind]
            ax_l.plot(ep, [r[f"{kind}_loss"] for r in hist], ls, color=color,
                      label=f"{tag}{kind}")
            ax_a.plot(ep, [100 * r[f"{kind}_acc"] for r in hist], ls, color=color,
                      label=f"{tag}{kind}")
    ax_l.set(xlabel="epoch", ylabel="loss (cross-entropy, label-smoothed)", title="Loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_a.legend(fontsize=8)
    save_figure(fig, path)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
