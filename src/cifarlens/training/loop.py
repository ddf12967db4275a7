"""Training: the seed report's recipe, reproducible, resumable, on CPU, one GPU or many (torchrun).

Recipe (`paper` preset): SGD momentum 0.9, lr 0.05 with a 1-epoch linear warm-up then cosine
annealing to 0 (per step), weight decay 5e-4, cross-entropy with label smoothing 0.1, batch 128,
50 epochs. Each epoch is seeded by (seed, epoch), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifarlens import _console as console
from cifarlens._io import RunLock
from cifarlens.data.dataset import CifarData
from cifarlens.data.load import load_dataset
from cifarlens.data.split import channel_stats, stratified_split, stratified_subset
from cifarlens.data.userdata import check_input_size
from cifarlens.errors import CifarlensError
from cifarlens.runs import (
    Run,
    check_data_identity,
    latest_good_checkpoint,
    prune_checkpoints,
)
from cifarlens.training.batches import Batches
from cifarlens.training.config import TrainConfig, diff_configs, seed_of, validate_config
from cifarlens.training.models import (
    build_model,
    check_model_source,
    model_source,
)
from cifarlens.training.runtime import (
    CHANNELS_LAST,
    COMPILE_COST_S,
    Dist,
    all_reduce_sum,
    autocast,
    barrier,
    compile_model,
    cpu_has_bf16,
    environment,
    graph_model,
    infer_logits,
    init_distributed,
    resolve_compile,
    resolve_device,
    resolve_graphs,
    resolve_precision,
)
from cifarlens.training.writer import (
    EpochWriter,
    cpu_copy,
    write_epoch,
    write_history,
)


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


# --- the recipe ------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


# Redraw the curves figure at most this often (seconds): it costs ~0.4 s of CPU per draw.
PLOT_EVERY_S = 30.0


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool = True,
          data: CifarData | None = None, log=None) -> dict[str, Any]:
    """Train one model into run folder `out`; returns the final summary (also done.json)."""
    validate_config(cfg)
    out = Path(out)
    d = init_distributed(cfg.device)
    resolve_graphs(cfg.compile, resolve_device(cfg.device, d.local_rank).type, d.world)  # up front
    say = log or console.log
    if not d.main:
        say = lambda msg: None  # noqa: E731
    lock = RunLock(out) if d.main else None
    created = not out.exists()
    if lock:
        if Run(out).config_path.exists() and not resume:
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
    """The run in phases, top to bottom: setup, data, resume-or-start, model+optimizer, the
    epoch loop (train, validate, checkpoint), finish."""
    rt = _setup(cfg, d, say)
    data = _load_data(cfg, data, progress)
    state = _resume_or_start(cfg, out, d, data, rt, resume, say)
    if isinstance(state, _Finished):
        return state.summary
    td = _training_data(cfg, out, d, data, rt)
    r = _model_and_optimizer(cfg, d, data, rt, td, state, say)

    run_start = time.perf_counter()
    say(f"training {cfg.model} on {cfg.dataset} ({data.source} data): {td.n_train} "
        f"train / {td.n_val} val images, {cfg.epochs} epochs x {td.steps} steps of "
        f"{cfg.batch_size}, {rt.device} {rt.precision}"
        + (f", {d.world} processes" if d.world > 1 else "")
        + (f", {r.step_mode}" if rt.device.type == "cuda" else ""))
    writer = EpochWriter() if d.main else None
    r.t_mark = time.perf_counter()  # end of the previous epoch's row: epoch_time runs from here
    try:
        for epoch in range(r.start_epoch, cfg.epochs):
            sums, train_time, t_val = _train_epoch(cfg, epoch, d, rt, td, r, progress, say)
            row = _validate_epoch(cfg, epoch, d, rt, td, r, sums, train_time, t_val, out)
            _checkpoint_epoch(cfg, epoch, out, d, data, r, row, writer, say)
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
    return _finish(cfg, out, d, rt, r, run_start, final_write_s)


# --- the phases of _train ------------------------------------------------------------------------


@dataclass
class _Runtime:
    """Where and how this run computes (resolved once, before any file is written)."""

    device: torch.device
    precision: str
    graphs: bool
    val_precision: str


@dataclass
class _Finished:
    """A resumed run that had already finished: its done.json."""

    summary: dict[str, Any]


@dataclass
class _TrainData:
    """This rank's training batches and the validation images on the device."""

    batches: Batches
    steps: int
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: Any
    std: Any
    channels_last: bool
    n_train: int
    n_val: int


@dataclass
class _RunState:
    """What the epoch loop changes: model, optimizer, step function, history and best epoch."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    train_model: torch.nn.Module
    step_fn: Callable
    step_mode: str
    probe: _CompileProbe | None
    history: list[dict]
    best_acc: float
    best_epoch: int
    start_epoch: int
    t_mark: float = 0.0
    last_plot: float = -math.inf


def _setup(cfg: TrainConfig, d: Dist, say) -> _Runtime:
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
    return _Runtime(device, precision, graphs, val_precision)


def _load_data(cfg: TrainConfig, data: CifarData | None, progress: bool) -> CifarData:
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, progress=progress)
    if data.name != cfg.dataset:
        raise CifarlensError(f"data is {data.name}, config says {cfg.dataset}")
    if data.train_x.shape[-1] != 32:  # your data imported at another --size (data/userdata.py)

        # before the run folder gets its first file: a refused run leaves nothing behind
        check_input_size(build_model(cfg.model, data.num_classes), data.train_x.shape[-1],
                         cfg.model)
    return data


def _resume_or_start(cfg: TrainConfig, out: Path, d: Dist, data: CifarData, rt: _Runtime,
                     resume: bool, say) -> dict | _Finished | None:
    """The checkpoint to resume from; or None after a fresh start has written its split,
    statistics and config; or _Finished for a run that is already done."""
    state = None
    run = Run(out)
    if resume and run.config_path.exists():
        old = run.config
        diffs = diff_configs(old["config"], dataclasses.asdict(cfg))
        if diffs:
            raise CifarlensError(f"cannot resume {out} with different settings: {'; '.join(diffs)}")
        check_data_identity(out, old, data)
        check_model_source(old.get("model_source"), cfg.model, str(out))
        if run.is_done():
            say(f"{out} is already finished; nothing to do")
            return _Finished(run.done)
        found = latest_good_checkpoint(out, warn=say)
        if found:
            state = found[1]
            say(f"resuming {out} after epoch {state['epoch']} ({found[0].name})")
    if state is None:
        _start_run(cfg, out, d, data, rt)
    return state


def _start_run(cfg: TrainConfig, out: Path, d: Dist, data: CifarData, rt: _Runtime) -> None:
    """A fresh run's split, normalization statistics and config, written before training."""
    split_seed = seed_of(cfg, "split")
    train_idx, val_idx = stratified_split(data.train_y, cfg.val_fraction, split_seed)
    used = train_idx if cfg.train_limit is None else \
        stratified_subset(data.train_y, train_idx, cfg.train_limit, split_seed)
    if d.main:  # other ranks read norm.json after the barrier (saves ~1 GB of float64 each)
        mean, std = channel_stats(data.train_x[used])
        config = {
            "config": dataclasses.asdict(cfg), "model": cfg.model,
            "model_source": model_source(cfg.model), "dataset": cfg.dataset,
            "num_classes": data.num_classes, "class_names": data.class_names,
            "data_source": data.source, "data_dir": str(data.folder.resolve().parent),
            "data_identity": data.identity,
            "seed": cfg.seed, "environment": environment(rt.device, rt.precision, d),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        Run(out).write_start(split={"train": train_idx, "val": val_idx, "train_used": used},
                             norm={"mean": mean, "std": std, "computed_on": "train_used"},
                             config=config)
    barrier(d)


def _training_data(cfg: TrainConfig, out: Path, d: Dist, data: CifarData,
                   rt: _Runtime) -> _TrainData:
    """The run's split as recorded (fresh or resumed alike), sharded per rank, as batches."""
    run = Run(out)
    split = run.split_indices(len(data.train_y))
    used, val_idx = split["train_used"], split["val"]
    norm = run.norm
    mean, std = norm["mean"], norm["std"]
    n_train, n_val = len(split["train_used"]), len(split["val"])

    # Each rank holds its own shard of the training split on its device.
    if d.world > 1:
        perm = np.random.default_rng(seed_of(cfg, "order")).permutation(len(used))
        shard_len = len(used) // d.world
        used = used[perm[d.rank::d.world][:shard_len]]
        val_idx = val_idx[d.rank::d.world]
    if cfg.batch_size % d.world:
        raise CifarlensError(f"--batch-size {cfg.batch_size} must divide by the {d.world} processes")
    local_bs = cfg.batch_size // d.world
    device = rt.device
    channels_last = CHANNELS_LAST
    batches = Batches(data.train_x[used], data.train_y[used], local_bs, mean, std, device=device,
                      augment=cfg.augment, seed=seed_of(cfg, "order") * 1000 + d.rank,
                      # own augmentation draws only when a study set the sources apart (--vary):
                      # the default keeps one stream, so existing runs' numbers do not change
                      aug_seed=(seed_of(cfg, "aug") * 1000 + d.rank
                                if cfg.order_seed is not None or cfg.aug_seed is not None
                                else None),
                      channels_last=channels_last, num_classes=data.num_classes,
                      cutout_size=cfg.cutout_size, mixup_alpha=cfg.mixup_alpha,
                      cutmix_alpha=cfg.cutmix_alpha)
    steps = len(batches)
    if steps == 0:
        raise CifarlensError("training split is empty")
    # Validation images live on the device as uint8 (copied once, not every epoch: 30 MB for the
    # paper split) and are normalized batch by batch there.
    val_x = torch.from_numpy(np.ascontiguousarray(data.train_x[val_idx])).to(device)
    val_y = torch.from_numpy(np.asarray(data.train_y[val_idx], dtype=np.int64)).to(device)
    return _TrainData(batches, steps, val_x, val_y, mean, std, channels_last, n_train, n_val)


def _model_and_optimizer(cfg: TrainConfig, d: Dist, data: CifarData, rt: _Runtime,
                         td: _TrainData, state: dict | None, say) -> _RunState:
    """Model, SGD and the warm-up+cosine schedule (restored from `state` on resume), and the
    step function: eager, DDP, CUDA graphs or compiled."""
    device, precision = rt.device, rt.precision
    torch.manual_seed(seed_of(cfg, "init"))
    model = build_model(cfg.model, data.num_classes).to(device)
    if td.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_kw: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    # Weight decay on conv/linear weights only: BN and bias decay hurts and is not in the recipe.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, **opt_kw)
    steps = td.steps
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
    if rt.graphs:
        t_graph = time.perf_counter()
        sample_x, _ = next(iter(td.batches.epoch(0)))
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
                         device, precision)
    probe = _CompileProbe(steps, total_steps - start_epoch * steps, device, d) \
        if cfg.compile == "auto" and device.type == "cuda" and step_mode == "eager" else None
    return _RunState(model, opt, sched, train_model, step_fn, step_mode, probe, history,
                     best_acc, best_epoch, start_epoch)


def _train_epoch(cfg: TrainConfig, epoch: int, d: Dist, rt: _Runtime, td: _TrainData,
                 r: _RunState, progress: bool, say) -> tuple[torch.Tensor, float, float]:
    """One epoch of SGD steps under a progress bar; returns the summed (loss*n, correct, n) over
    ranks, the training time and the time it ended."""
    from tqdm import tqdm

    device, steps = rt.device, td.steps
    # dropout draws: same with or without resume; each rank its own (rank 0 = single process)
    torch.manual_seed(seed_of(cfg, "aug") * 1000 + epoch + 7919 * d.rank)
    r.model.train()
    t0 = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
               disable=not progress, leave=False, dynamic_ncols=True, file=sys.stderr)
    for i, (xb, yb) in enumerate(td.batches.epoch(epoch)):
        r.step_fn(xb, yb, sums)
        if r.probe is not None and (go := r.probe.after_step(i)) is not None:
            if go:
                say(f"compiling the model (--compile auto: run estimated at "
                    f"{_fmt_time(r.probe.est_s or 0)}, compile ~{COMPILE_COST_S:.0f} s)")
                r.step_fn = _make_step(compile_model(r.train_model), r.opt, r.sched, cfg, device,
                                       rt.precision)
                r.step_mode = "compile"
            r.probe = None
        bar.update(1)
        if epoch == r.start_epoch and i == min(9, steps - 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once: the estimate needs device time
            per_step = (time.perf_counter() - t0) / (i + 1)
            est = per_step * steps * (cfg.epochs - r.start_epoch) * 1.1
            say(f"estimated time for the run: {_fmt_time(est)}")
        if i % 25 == 0 and progress:
            bar.set_postfix(img_s=f"{(i + 1) * cfg.batch_size / (time.perf_counter() - t0):.0f}")
    bar.close()
    sums = all_reduce_sum(sums, d)
    t_val = time.perf_counter()
    return sums, t_val - t0, t_val


def _validate_epoch(cfg: TrainConfig, epoch: int, d: Dist, rt: _Runtime, td: _TrainData,
                    r: _RunState, sums: torch.Tensor, train_time: float, t_val: float,
                    out: Path) -> dict[str, Any]:
    """Validation after the epoch, both losses checked for divergence; the epoch's history row."""
    ckpt_dir = Run(out).checkpoint_dir
    tr_loss, tr_correct, tr_n = sums.tolist()  # one host sync per epoch
    if not math.isfinite(tr_loss):
        raise CifarlensError(
            f"training diverged: loss became {tr_loss} in epoch {epoch + 1}; the last good "
            f"checkpoint is kept in {ckpt_dir} (try a lower --lr)")
    vl = _validate(r.model, td.val_x, td.val_y, td.mean, td.std, cfg, rt.device,
                   rt.val_precision, d)
    if not math.isfinite(vl["val_loss"]):  # the epoch's last steps broke the weights
        raise CifarlensError(
            f"training diverged: validation loss became {vl['val_loss']} in epoch "
            f"{epoch + 1}; the last good checkpoint is kept in {ckpt_dir} (try a lower --lr)")
    now = time.perf_counter()
    val_time, epoch_time, r.t_mark = now - t_val, now - r.t_mark, now
    # other_time: everything but training steps and validation since the previous row,
    # i.e. the previous epoch's bookkeeping (checkpoint hand-off, logs) and this one's setup.
    row = {"epoch": epoch + 1, "train_loss": tr_loss / tr_n, "train_acc": tr_correct / tr_n,
           **vl, "lr": r.opt.param_groups[0]["lr"], "epoch_time": epoch_time,
           "train_time": train_time, "val_time": val_time,
           "other_time": max(0.0, epoch_time - train_time - val_time),
           "images_per_s": tr_n / train_time}
    r.history.append(row)
    return row


def _checkpoint_epoch(cfg: TrainConfig, epoch: int, out: Path, d: Dist, data: CifarData,
                      r: _RunState, row: dict[str, Any], writer: EpochWriter | None, say) -> None:
    """Best epoch so far; on rank 0 the epoch's checkpoint, best.pt, metrics and curves, handed
    to the background writer, and the epoch's log line."""
    improved = row["val_acc"] > r.best_acc
    if improved:
        r.best_acc, r.best_epoch = row["val_acc"], epoch + 1
    if not d.main:
        return
    assert writer is not None
    now = r.t_mark
    base = {"model_name": cfg.model, "num_classes": data.num_classes,
            "dataset": cfg.dataset, "epoch": epoch + 1, "val_acc": row["val_acc"]}
    # A CPU copy of the state, taken now: training goes on while the writer saves it.
    # The best weights are this same copy, written (best.pt) with this checkpoint.
    snap = cpu_copy({"model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                     "scheduler": r.sched.state_dict()})
    hist = [dict(h) for h in r.history]
    # The curve figure costs ~0.4 s of CPU: redraw it at most every PLOT_EVERY_S (a
    # person glancing at it) and always after the last epoch; metrics every epoch.
    plot = epoch + 1 == cfg.epochs or now - r.last_plot >= PLOT_EVERY_S
    r.last_plot = now if plot else r.last_plot
    writer.submit(lambda e=epoch + 1, b=({**base, "model": snap["model"]} if improved else None),
                  c={**base, **snap, "history": hist, "best_val_acc": r.best_acc,
                     "best_epoch": r.best_epoch}, h=hist, pl=plot:
                  write_epoch(out, e, b, c, h, pl))
    say(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.3f} acc "
        f"{row['train_acc']:.3f} | val loss {row['val_loss']:.3f} acc "
        f"{row['val_acc']:.3f} | {row['images_per_s']:.0f} img/s, "
        f"{_fmt_time(row['epoch_time'])}")


def _finish(cfg: TrainConfig, out: Path, d: Dist, rt: _Runtime, r: _RunState, run_start: float,
            final_write_s: float) -> dict[str, Any]:
    """done.json: the run's summary, written last (its presence means finished)."""
    if d.main and r.history and r.start_epoch >= cfg.epochs:
        # killed after the last checkpoint, before the files that follow it: finish those
        prune_checkpoints(out)
        write_history(out, r.history)
    summary = {"finished": True, "epochs": cfg.epochs, "best_epoch": r.best_epoch,
               "best_val_acc": r.best_acc, "final": r.history[-1] if r.history else None,
               "wall_time_s": time.perf_counter() - run_start, "final_write_s": final_write_s,
               "step_mode": r.step_mode, "val_precision": rt.val_precision}
    if d.main:
        Run(out).write_done(summary)
    barrier(d)
    return summary


def _make_step(model, opt, sched, cfg: TrainConfig, device, precision):
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


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
