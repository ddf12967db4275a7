#!/usr/bin/env python
"""Cost of `cifarlens robustness` per image: each corruption at each severity, the forward pass,
and the random draws, beside the training rate, to choose the CPU default (issue 23: at most 20%
of a quick-preset model's training time).

Each round, in one process and in this order: the training rate of the model (SGD steps at
batch 128, `estimate.measured_rate`), the inference rate (`training.runtime.infer_logits` at the batch
robustness uses, the precision evaluation picks), then every corruption at every severity on
`--images` random uint8 images (`corruptions.corrupt`, seeded per image). The quick preset's
model time is estimated from the measured rates as its 10 epochs of 10,000 training images plus
a 10,000-image validation each epoch; each candidate default's cost is its forward passes at the
measured inference rate plus its corruptions at their measured times. Throughput does not depend
on the weights or the pixels, so an untrained model and random images stand in.

The `rng` block times what the random draws cost: one seeded torch.Generator per image (what
corruptions.py uses) against a counter-based integer hash in torch (the alternative that would
run on the GPU), for 1,000 images x 3,072 uniforms.

  PYTHONPATH=src .venv/bin/python bench/corruption_cost.py --rounds 2 \\
      --json bench/results/corruption_cost_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, median, random_cifar, say, write_json  # noqa: E402

from cifarlens.analysis import corruptions as C  # noqa: E402
from cifarlens.analysis.robustness import RobustnessPlan  # noqa: E402
from cifarlens.study.estimate import measured_rate  # noqa: E402
from cifarlens.training.models import build_model  # noqa: E402
from cifarlens.training.runtime import infer_logits, resolve_precision  # noqa: E402

QUICK_EPOCHS, QUICK_TRAIN, QUICK_VAL = 10, 10_000, 10_000  # train.PRESETS["quick"], val split
CANDIDATES = [  # (images, severities, corruptions)
    (250, C.SEVERITIES, tuple(C.CORRUPTIONS)),
    (500, C.SEVERITIES, tuple(C.CORRUPTIONS)),
    (1000, (3, 5), tuple(C.CORRUPTIONS)),
    (1000, C.SEVERITIES, tuple(C.CORRUPTIONS)),
    (500, C.SEVERITIES, tuple(C.ALL)),
    (10_000, C.SEVERITIES, tuple(C.ALL)),
]


def rng_cost(n: int = 1000, length: int = 3072) -> dict[str, float]:
    m32 = 0xFFFFFFFF

    def mul32(a: torch.Tensor, c: int) -> torch.Tensor:  # exact in int64: products < 2^48
        return (a * (c & 0xFFFF) + (((a * (c >> 16)) & 0xFFFF) << 16)) & m32

    def h32(x: torch.Tensor) -> torch.Tensor:  # lowbias32 (Wellons' hash-prospector)
        x = x ^ (x >> 16)
        x = mul32(x, 0x7FEB352D)
        x = x ^ (x >> 15)
        x = mul32(x, 0x846CA68B)
        return x ^ (x >> 16)

    keys = h32(torch.arange(n, dtype=torch.int64))
    j = torch.arange(length, dtype=torch.int64)

    def hashed() -> torch.Tensor:
        v = h32(h32((j[None] + keys[:, None]) & m32) ^ keys[:, None])
        return ((v >> 8).float() + 0.5) / 2 ** 24

    def generators() -> torch.Tensor:
        return torch.stack([torch.rand(length, generator=torch.Generator().manual_seed(int(k)))
                            for k in keys])

    out = {}
    for name, fn in (("per_image_generator_s", generators), ("counter_hash_s", hashed)):
        fn()
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0
    return out


def one_round(a, model, images: np.ndarray) -> dict:
    dev = torch.device("cpu")
    prec = resolve_precision("auto", dev)
    r = {"load_before": loadavg()}
    r["train_img_s"] = measured_rate(a.model, 100, 32, 128, "cpu", "auto", budget_s=a.train_s,
                                     max_steps=50)
    infer_logits(model, images[:50], [0.5] * 3, [0.25] * 3, device=dev, precision=prec,
                 batch_size=50)
    t0 = time.perf_counter()
    infer_logits(model, images, [0.5] * 3, [0.25] * 3, device=dev, precision=prec,
                 batch_size=a.batch_size)
    r["infer_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(images)
    r["corrupt_ms_per_image"] = {}
    idx = np.arange(len(images))
    for name in C.ALL:
        r["corrupt_ms_per_image"][name] = {}
        for s in C.SEVERITIES:
            t0 = time.perf_counter()
            C.corrupt(images, name, s, idx)
            r["corrupt_ms_per_image"][name][str(s)] = 1000 * (time.perf_counter() - t0) / len(idx)
    r["rng"] = rng_cost()
    r["load_after"] = loadavg()
    return r


def summarise(rounds: list[dict]) -> dict:
    train = median([r["train_img_s"] for r in rounds])
    infer_ms = median([r["infer_ms_per_image"] for r in rounds])
    corrupt_ms = {n: {s: median([r["corrupt_ms_per_image"][n][s] for r in rounds])
                      for s in rounds[0]["corrupt_ms_per_image"][n]}
                  for n in rounds[0]["corrupt_ms_per_image"]}
    eval_img_s = 1000 / infer_ms
    quick_s = QUICK_EPOCHS * (QUICK_TRAIN / train + QUICK_VAL / eval_img_s)
    cands = []
    for n, sevs, names in CANDIDATES:
        plan = RobustnessPlan(corruptions=names, severities=tuple(sevs))
        passes = plan.forward_passes(n)
        corr_s = n * sum(corrupt_ms[c][str(s)] for c in names for s in sevs) / 1000
        total = passes * infer_ms / 1000 + corr_s
        cands.append({"images": n, "severities": list(sevs), "corruptions": len(names),
                      "forward_passes": passes, "corrupt_s": round(corr_s, 1),
                      "total_s": round(total, 1), "share_of_quick": round(total / quick_s, 3)})
    return {"train_img_s": round(train, 1), "infer_ms_per_image": round(infer_ms, 3),
            "eval_img_s": round(eval_img_s, 1), "quick_model_s": round(quick_s, 1),
            "corrupt_ms_per_image_mean": {n: round(float(np.mean(list(v.values()))), 3)
                                          for n, v in corrupt_ms.items()},
            "candidates": cands,
            "rng_s": {k: median([r["rng"][k] for r in rounds]) for k in rounds[0]["rng"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg")
    p.add_argument("--images", type=int, default=500, help="random images per measurement")
    p.add_argument("--batch-size", type=int, default=500, help="inference batch (robustness's)")
    p.add_argument("--train-s", type=float, default=20.0, help="seconds of training steps")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.manual_seed(0)
    model = build_model(a.model, 100).eval()
    images, _ = random_cifar(a.images)
    rounds = []
    for i in range(a.rounds):
        rounds.append(one_round(a, model, images))
        say(f"round {i + 1}: train {rounds[-1]['train_img_s']:.0f} img/s, inference "
            f"{rounds[-1]['infer_ms_per_image']:.2f} ms/img")
    s = summarise(rounds)
    for c in s["candidates"]:
        say(f"{c['images']:>6} images x {len(c['severities'])} severities x {c['corruptions']} "
            f"corruptions: {c['total_s']:>8.1f} s = {100 * c['share_of_quick']:.1f}% of a quick "
            f"model ({s['quick_model_s']:.0f} s)")
    write_json(a.json, {"machine": machine_info(torch.device("cpu")), "args": vars(a),
                        "summary": s, "rounds": rounds})


if __name__ == "__main__":
    main()
