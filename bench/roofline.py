#!/usr/bin/env python
"""Roofline note: how close does training come to this machine's matmul rate?

  FLOPs per training image = 3 x forward FLOPs (cifarlens.complexity.count_flops; backward is
  about twice the forward), 1.95 GFLOP for the baseline model.
  Matmul rate = torch.matmul of two n x n matrices (2 n^3 FLOPs), repeated: fp32 tensors, bf16
  tensors, and fp32 tensors under bf16 autocast (includes the casts). On CUDA, fp32 uses TF32
  (float32_matmul_precision "high", as train.py sets).
  Achieved = training images/s x FLOPs per image, from cifarlens's path (bench/train_throughput.py's
  `ours`), measured here in the same rounds as the matmuls (so both see the same machine load), or
  taken from a --train-json result.

  .venv/bin/python bench/roofline.py --rounds 3 --json bench/results/roofline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

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

from cifarlens.data.split import channel_stats  # noqa: E402
from cifarlens.training.complexity import count_flops  # noqa: E402
from cifarlens.training.models import build_model  # noqa: E402


def matmul_rate(kind: str, n: int, reps: int, device) -> float:
    """GFLOP/s of n x n matmuls."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    if kind == "bf16":
        a, b = a.bfloat16(), b.bfloat16()

    def f():
        if kind == "autocast-bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return a @ b
        return a @ b

    f()
    sync(device)
    t0 = now()
    for _ in range(reps):
        f()
    sync(device)
    return 2 * n**3 * reps / (now() - t0) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, help="matrix size (default 2048 on CPU, 8192 on CUDA)")
    ap.add_argument("--reps", type=int, help="matmuls per timing (default 5 CPU, 50 CUDA)")
    ap.add_argument("--train-steps", type=int, default=2,
                    help="training steps of our path per round (0: use --train-json only)")
    ap.add_argument("--train-json", help="a bench/train_throughput.py result to use as well")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    n = a.n or (8192 if cuda else 2048)
    reps = a.reps or (50 if cuda else 5)
    model = build_model("baseline", 100)
    fwd = count_flops(model)
    per_img = 3 * fwd
    say(f"forward {fwd:,} FLOPs/image; training ~3x = {per_img / 1e9:.3f} GFLOP/image")

    ours = None
    if a.train_steps:
        from train_throughput import build_ours

        x, y = random_cifar(TRAIN_SPLIT_IMAGES)
        mean, std = channel_stats(x[:5000])
        ours = build_ours("ours", x, y, mean, std, device, 128)
        ours.run_steps(1)  # warm-up

    kinds = ["fp32", "bf16", "autocast-bf16"]
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    train_img_s: list[float] = []
    fractions: list[float] = []
    for r in range(a.rounds):
        for k in kinds:
            rates[k].append(matmul_rate(k, n, reps, device))
        if ours is not None:
            dt, _ = ours.run_steps(a.train_steps)
            train_img_s.append(a.train_steps * 128 / dt)
            fractions.append(train_img_s[-1] * per_img / 1e9 / rates["bf16"][-1])
        say(f"  round {r + 1}: " + ", ".join(f"{k} {rates[k][-1]:.0f} GFLOP/s" for k in kinds)
            + (f"; training {train_img_s[-1]:.1f} img/s = {train_img_s[-1] * per_img / 1e9:.0f}"
               f" GFLOP/s ({100 * fractions[-1]:.0f} % of this round's bf16 matmul)"
               if ours is not None else "") + f" (load {loadavg()})")

    out = {"bench": "roofline", "machine": machine_info(device),
           "settings": {**vars(a), "n": n, "reps": reps, "device": str(device)},
           "forward_flops_per_image": fwd, "train_flops_per_image": per_img,
           "matmul_gflops": {k: {"rounds": [round(v, 1) for v in vs], "median": round(median(vs), 1),
                                 "max": round(max(vs), 1)} for k, vs in rates.items()}}
    peak = max(rates["bf16"])
    if ours is not None:
        med = median(train_img_s)
        out["train_interleaved"] = {
            "rounds_img_s": [round(v, 2) for v in train_img_s], "median_img_s": round(med, 2),
            "achieved_gflops_median": round(med * per_img / 1e9, 1),
            "fraction_of_same_round_bf16_matmul": [round(f, 3) for f in fractions],
            "fraction_median": round(median(fractions), 3),
            "fraction_of_best_bf16_matmul": round(med * per_img / 1e9 / peak, 3)}
    if a.train_json:
        tj = json.loads(Path(a.train_json).read_text())
        img_s = tj["contenders"]["ours"]["median_img_s"]
        out["train_from_json"] = {"file": a.train_json, "median_img_s": img_s,
                                  "achieved_gflops": round(img_s * per_img / 1e9, 1),
                                  "fraction_of_best_bf16_matmul": round(img_s * per_img / 1e9 / peak, 3)}
    print(f"training FLOPs/image: {per_img / 1e9:.3f} GFLOP (3 x {fwd / 1e9:.3f} forward)")
    for k, d in out["matmul_gflops"].items():
        print(f"matmul {k:14s} median {d['median']:8.1f}  best {d['max']:8.1f} GFLOP/s  (n={n})")
    for key in ("train_interleaved", "train_from_json"):
        if key in out:
            d = out[key]
            print(f"{key}: {d['median_img_s']:.1f} img/s -> "
                  f"{d.get('achieved_gflops_median', d.get('achieved_gflops')):.1f} GFLOP/s = "
                  f"{100 * d['fraction_of_best_bf16_matmul']:.1f} % of the best bf16 matmul rate"
                  + (f" ({100 * d['fraction_median']:.1f} % of the same round's, median)"
                     if "fraction_median" in d else ""))
    write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
