#!/usr/bin/env python
"""Data-path throughput of each augmentation: `cifarlens.data.Batches` epochs (seeded
permutation, the augment's batched ops, normalize, channels_last) without any model, in
alternating rounds, on the CPU or a GPU. The question it answers: what an augment costs next
to a training step (the baseline trains at ~184 img/s on a 2-core CPU, docs/benchmarks.md).

  .venv/bin/python bench/augment_throughput.py --rounds 3 --json bench/results/augment_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
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
from cifarlens.training.augment import AUGMENTS  # noqa: E402
from cifarlens.training.batches import Batches  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10_000, help="images per epoch (default 10000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    device = resolve_device(a.device)
    x, y = random_cifar(a.images)
    mean, std = channel_stats(x[:2000])
    rates: dict[str, list[float]] = {aug: [] for aug in AUGMENTS}
    for r in range(a.rounds):
        for aug in AUGMENTS:
            b = Batches(x, y, a.batch_size, mean, std, device=device, augment=aug, seed=0,
                        num_classes=100, channels_last=True)
            sync(device)
            t0 = now()
            for _batch in b.epoch(r):
                pass
            sync(device)
            rates[aug].append(len(b) * b.batch_size / (now() - t0))
        say(f"round {r + 1}/{a.rounds} done")
    out = {"method": "Batches.epoch over random uint8 images, no model; img/s per round",
           "images": a.images, "batch_size": a.batch_size, "load_avg_1min": loadavg(),
           "machine": machine_info(device),
           "augments": {aug: {"median_img_s": median(v), "rounds": v} for aug, v in rates.items()}}
    for aug, v in rates.items():
        print(f"{aug:10s} {median(v):9.0f} img/s (median of {len(v)})")
    write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
