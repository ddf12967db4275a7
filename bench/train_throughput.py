#!/usr/bin/env python
"""Training throughput of the baseline model at batch 128: cifarlens's path vs a common recipe.

  ours  cifarlens's path, built as train.py builds it: the split held as a uint8 tensor on the
        device, `Batches` (seeded permutation, batched 4-px crop + flip, normalize; channels_last)
        and train._make_step (bf16 autocast where supported, SGD momentum 0.9 with weight decay
        on weights only, label smoothing 0.1, LambdaLR; device-side metric sums; fused SGD on
        CUDA), in the step mode `--compile auto` picks for one process on this device
        (train.resolve_graphs: CUDA graphs on a GPU, eager on the CPU). This is the headline.
  ref   the common recipe, written here without torchvision: a Dataset returning one image at a
        time with a per-image random crop (4-px zero pad) and flip in numpy, ToTensor + Normalize
        by hand, DataLoader(num_workers=2, shuffle=True, batch_size=128), fp32, the same model,
        optimizer, schedule and loss; `loss.item()` each step, as training loops usually log.

Other contenders isolate one factor each: ours-fp32, ours-cl / ours-nocl (channels_last on/off),
ours-1t / ref-1t (one CPU thread in the training process), ours-eager / ours-graphs (step mode
forced), ours-det (cuDNN deterministic, no autotuning, deterministic algorithms: the cost of
bit-exact CUDA runs), ours-compile / ours-compile-ro (torch.compile default / reduce-overhead).

Method: every contender is built and warmed up first (compilation happens there), then the
contenders run --rounds rounds of --steps steps each, alternating within each round (order
reversed every other round, ABBA), so machine noise hits all of them alike. Reported: each
round's images/s, the median, the median of the per-round ratios to `ref`, the time of one
epoch-equivalent (40,000 images, the paper preset's train split) and the share of our step spent
producing the batch.

  .venv/bin/python bench/train_throughput.py --steps 3 --rounds 5 --json bench/results/train_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    TRAIN_SPLIT_IMAGES,
    loadavg,
    machine_info,
    median,
    now,
    random_cifar,
    resolve_device,
    say,
    sync,
    write_json,
)

from cifarlens.data.split import channel_stats
from cifarlens.training.batches import Batches  # noqa: E402
from cifarlens.training.config import make_config
from cifarlens.training.loop import _make_step, lr_factor
from cifarlens.training.models import build_model  # noqa: E402
from cifarlens.training.runtime import CHANNELS_LAST, graph_model, resolve_graphs, resolve_precision

VARIANTS = ("ours", "ours-fp32", "ours-cl", "ours-nocl", "ours-1t", "ours-eager", "ours-graphs",
            "ours-det", "ours-compile", "ours-compile-ro", "ref", "ref-1t")  # examples; suffixes combine, e.g. ours-fp32-1t


def parse_variant(name: str) -> dict[str, Any]:
    """`ours` or `ref`, then any of: -fp32 / -bf16 (precision, ours only), -cl / -nocl
    (channels_last, ours only), -Nt (N CPU threads in the training process), -compile /
    -compile-ro (torch.compile default / reduce-overhead, ours only)."""
    base, *opts = name.split("-")
    if base not in ("ours", "ref"):
        raise ValueError(f"{name}: must start with ours or ref")
    v: dict[str, Any] = {"ref": base == "ref"}
    i = 0
    while i < len(opts):
        o = opts[i]
        if o in ("fp32", "bf16") and base == "ours":
            v["precision"] = o
        elif o in ("cl", "nocl") and base == "ours":
            v["channels_last"] = o == "cl"
        elif o.endswith("t") and o[:-1].isdigit() and int(o[:-1]) >= 1:
            v["threads"] = int(o[:-1])
        elif o in ("eager", "graphs") and base == "ours":
            v["step_mode"] = o
        elif o == "det" and base == "ours":
            v["deterministic"] = True
        elif o == "compile" and base == "ours":
            ro = i + 1 < len(opts) and opts[i + 1] == "ro"
            v["compile"] = "reduce-overhead" if ro else "default"
            i += ro
        else:
            raise ValueError(f"{name}: unknown option {o!r}")
        i += 1
    return v


def make_optimizer(model, cfg, device, fused: bool):
    """train.py's optimizer and schedule: weight decay on weights only, warm-up then cosine."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                          momentum=cfg.momentum, **({"fused": True} if fused else {}))
    total = 10**6  # long horizon: the lr stays near its peak during the benchmark
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, 100))
    return opt, sched, total


@dataclass
class Contender:
    name: str
    desc: str
    run_steps: Any  # callable(n) -> (seconds, data_seconds or None)
    threads: int | None = None
    batches: Batches | None = None  # ours: for the data-only timing
    warmup_s: float = 0.0
    step_mode: str | None = None  # ours: eager, graphs or compile
    img_s: list[float] = field(default_factory=list)
    data_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)


# --- (a) cifarlens's path ------------------------------------------------------------------------


def build_ours(name, x, y, mean, std, device, bs, *, model="baseline", precision="auto",
               channels_last=None, compile=None, threads=None, step_mode=None,
               deterministic=False) -> Contender:
    cfg = make_config("paper", model=model, augment="crop-flip", batch_size=bs,
                        device=device.type)
    precision = resolve_precision(precision, device)
    cl = CHANNELS_LAST if channels_last is None else channels_last
    batches = Batches(x, y, bs, mean, std, device=device, augment=cfg.augment, seed=0,
                      channels_last=cl)
    torch.manual_seed(0)
    model = build_model(cfg.model, 100).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt, sched, total = make_optimizer(model, cfg, device, fused=device.type == "cuda")
    if compile:
        step_mode = "compile"
    elif step_mode is None:  # what train.py's --compile auto does for one process here
        step_mode = "graphs" if resolve_graphs("auto", device.type, 1) else "eager"
    if step_mode == "compile":
        train_model = torch.compile(model, dynamic=False, mode=compile)
    elif step_mode == "graphs":
        sample, _ = next(iter(batches.epoch(10**6)))
        train_model = graph_model(model, sample, device, precision)
    else:
        train_model = model
    step = _make_step(train_model, opt, sched, cfg, device, precision)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    state = {"epoch": 0, "it": batches.epoch(0)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            state["it"] = batches.epoch(state["epoch"])
            return next(state["it"])

    def run_steps(n: int):
        if deterministic:  # per call: the other contenders keep train.py's settings
            prev = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                    torch.are_deterministic_algorithms_enabled())
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
            torch.use_deterministic_algorithms(True, warn_only=True)
            try:
                return _run_steps(n)
            finally:
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[:2]
                torch.use_deterministic_algorithms(prev[2])
        return _run_steps(n)

    def _run_steps(n: int):
        data = 0.0
        sync(device)
        t0 = now()
        for _ in range(n):
            ta = now()
            xb, yb = next_batch()
            if device.type == "cpu":  # synchronous: the time in next() is the data work
                data += now() - ta
            step(xb, yb, sums)
        sync(device)
        return now() - t0, data if device.type == "cpu" else None

    desc = (f"Batches(uint8 on {device.type}, crop-flip) + train._make_step, {precision}, "
            f"{'channels_last' if cl else 'contiguous'}, step mode {step_mode}"
            + (f", torch.compile({compile})" if compile else "")
            + (", deterministic" if deterministic else "")
            + (f", {threads} thread(s)" if threads else ""))
    return Contender(name, desc, run_steps, threads, batches, step_mode=step_mode)


# --- (b) the reference recipe ----------------------------------------------------------------------


class RefDataset(torch.utils.data.Dataset):
    """One image at a time, like torchvision's CIFAR100 + RandomCrop(32, 4) + RandomHorizontalFlip
    + ToTensor + Normalize, with the transforms written out in numpy."""

    def __init__(self, x_nchw: np.ndarray, y: np.ndarray, mean, std):
        self.x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))  # HWC, as torchvision keeps it
        self.y = y
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = np.pad(self.x[i], ((4, 4), (4, 4), (0, 0)))  # zero padding, 40x40
        dy, dx = np.random.randint(0, 9, 2)
        img = img[dy:dy + 32, dx:dx + 32]
        if np.random.rand() < 0.5:
            img = img[:, ::-1]
        t = img.transpose(2, 0, 1).astype(np.float32) / 255.0  # ToTensor
        t = (t - self.mean) / self.std  # Normalize
        return torch.from_numpy(np.ascontiguousarray(t)), int(self.y[i])


def build_ref(name, x, y, mean, std, device, bs, workers: int, model="baseline",
              threads=None) -> Contender:
    cfg = make_config("paper", model=model, batch_size=bs)
    loader = torch.utils.data.DataLoader(
        RefDataset(x, y, mean, std), batch_size=bs, shuffle=True, num_workers=workers,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, 100).to(device).train()
    opt, sched, _ = make_optimizer(model, cfg, device, fused=False)
    state = {"it": iter(loader), "running": 0.0}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    def run_steps(n: int):
        wait = 0.0
        sync(device)
        t0 = now()
        for _ in range(n):
            ta = now()
            xb, yb = next_batch()
            wait += now() - ta
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            state["running"] += loss.item()
        sync(device)
        return now() - t0, wait

    desc = (f"per-image numpy crop/flip Dataset + DataLoader(num_workers={workers}, shuffle=True,"
            f" batch_size={bs}), ToTensor+Normalize by hand, fp32, contiguous"
            + (f", {threads} thread(s) in the main process" if threads else ""))
    return Contender(name, desc, run_steps, threads)


# --- measurement -----------------------------------------------------------------------------------


def data_only(batches: Batches, device, n: int) -> float:
    """Seconds per batch for producing our batches alone (permutation, gather, crop, flip,
    normalize, layout), synchronized at the end."""
    it = batches.epoch(12345)
    next(it)
    sync(device)
    t0 = now()
    k = 0
    for _ in range(n):
        try:
            next(it)
        except StopIteration:
            it = batches.epoch(12346)
            next(it)
        k += 1
    sync(device)
    return (now() - t0) / k


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default="baseline", help="baseline (the paper's) or small")
    ap.add_argument("--images", type=int, default=TRAIN_SPLIT_IMAGES,
                    help="size of the random uint8 train split held in memory")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    ap.add_argument("--contenders", default="ours,ref",
                    help=f"comma-separated, e.g.: {', '.join(VARIANTS)} (suffixes combine: "
                         "ours-fp32-1t)")
    ap.add_argument("--data-steps", type=int, default=20, help="batches for the data-only timing")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)

    names = [s.strip() for s in a.contenders.split(",") if s.strip()]
    try:
        variants = {n: parse_variant(n) for n in names}
    except ValueError as e:
        ap.error(str(e))
    device = resolve_device(a.device)
    if device.type == "cuda":  # what train.py sets on CUDA
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    x, y = random_cifar(a.images)
    mean, std = channel_stats(x[:5000])
    base_threads = torch.get_num_threads()
    machine = machine_info(device)
    say(f"device {device}, {base_threads} threads, load {loadavg()}, contenders {names}")

    cs: list[Contender] = []
    failed: dict[str, str] = {}
    for n in names:
        v = variants[n]
        try:  # a contender that cannot be built or warmed up (e.g. a compile error) is reported
            if v.get("ref"):
                c = build_ref(n, x, y, mean, std, device, a.batch_size, a.workers, a.model,
                              threads=v.get("threads"))
            else:
                c = build_ours(n, x, y, mean, std, device, a.batch_size, model=a.model,
                               precision=v.get("precision", "auto"),
                               channels_last=v.get("channels_last"), compile=v.get("compile"),
                               threads=v.get("threads"), step_mode=v.get("step_mode"),
                               deterministic=v.get("deterministic", False))
            torch.set_num_threads(c.threads or base_threads)
            t0 = now()
            c.run_steps(a.warmup)
            c.warmup_s = now() - t0
        except Exception as e:  # noqa: BLE001 - recorded, the other contenders still run
            failed[n] = f"{type(e).__name__}: {str(e)[:500]}"
            say(f"  {n}: FAILED in build/warm-up: {failed[n]}")
            continue
        finally:
            torch.set_num_threads(base_threads)
        say(f"  {n}: {c.desc}; warm-up {c.warmup_s:.1f} s")
        cs.append(c)
    if not cs:
        write_json(a.json, {"bench": "train_throughput", "failed": failed})
        return 1

    rounds_log = []
    for r in range(a.rounds):
        order = cs if r % 2 == 0 else cs[::-1]
        row = {"round": r + 1, "load_before": loadavg()}
        for c in order:
            torch.set_num_threads(c.threads or base_threads)
            dt, data = c.run_steps(a.steps)
            torch.set_num_threads(base_threads)
            c.img_s.append(a.steps * a.batch_size / dt)
            c.total_s.append(dt)
            if data is not None:
                c.data_s.append(data)
            row[c.name] = round(c.img_s[-1], 2)
        row["load_after"] = loadavg()
        rounds_log.append(row)
        say("  round " + str(r + 1) + ": " + ", ".join(f"{c.name} {c.img_s[-1]:.1f} img/s" for c in cs)
            + f" (load {row['load_before']} -> {row['load_after']})")

    res: dict[str, Any] = {}
    ref = next((c for c in cs if c.name == "ref"), None)
    ref_1t = next((c for c in cs if c.name == "ref-1t"), None)
    for c in cs:
        med = median(c.img_s)
        d: dict[str, Any] = {
            "description": c.desc, "step_mode": c.step_mode, "warmup_s": round(c.warmup_s, 2),
            "rounds_img_s": [round(v, 2) for v in c.img_s], "median_img_s": round(med, 2),
            "epoch_equivalent_s": round(TRAIN_SPLIT_IMAGES / med, 1),
            "paper_50_epochs_train_only_s": round(50 * TRAIN_SPLIT_IMAGES / med, 0),
        }
        if c.data_s:
            key = "data_share_inline" if c.batches is not None else "data_wait_share"
            d[key] = round(sum(c.data_s) / sum(c.total_s), 4)
        if ref is not None and c is not ref:
            ratios = [a_ / b_ for a_, b_ in zip(c.img_s, ref.img_s, strict=True)]
            d["ratio_vs_ref_per_round"] = [round(v, 3) for v in ratios]
            d["ratio_vs_ref_median"] = round(median(ratios), 3)
        if ref_1t is not None and c.name.startswith("ours") and c.threads == 1:  # like for like
            ratios = [a_ / b_ for a_, b_ in zip(c.img_s, ref_1t.img_s, strict=True)]
            d["ratio_vs_ref_1t_per_round"] = [round(v, 3) for v in ratios]
            d["ratio_vs_ref_1t_median"] = round(median(ratios), 3)
        if c.batches is not None:
            torch.set_num_threads(c.threads or base_threads)
            per_batch = data_only(c.batches, device, a.data_steps)
            torch.set_num_threads(base_threads)
            step_s = a.batch_size / med
            d["data_only_s_per_batch"] = round(per_batch, 5)
            d["data_share_of_step"] = round(per_batch / step_s, 4)
        res[c.name] = d

    out = {"bench": "train_throughput", "machine": machine,
           "settings": {**vars(a), "device": str(device), "classes": 100,
                        "epoch_equivalent_images": TRAIN_SPLIT_IMAGES},
           "rounds": rounds_log, "contenders": res, "failed": failed}
    print("\ncontender        median img/s   epoch-eq (s)   ratio vs ref (median)   data share")
    for n, d in res.items():
        share = d.get("data_share_of_step", d.get("data_wait_share"))
        print(f"{n:16s} {d['median_img_s']:12.1f} {d['epoch_equivalent_s']:14.1f} "
              f"{d.get('ratio_vs_ref_median', float('nan')):23.3f}   "
              f"{'-' if share is None else f'{100 * share:.1f} %'}")
    write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
