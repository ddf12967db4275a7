#!/usr/bin/env python
"""Inference in NCHW vs NHWC (channels_last) on this CPU: the eval forward that evaluation,
validation and the deletion/insertion curves run, per model and precision, 1 thread.

Rounds alternate the layout order (ABBA); the ratio within a round is what counts on a shared
machine.

  PYTHONPATH=src .venv/bin/python bench/eval_layout.py --rounds 2 --json bench/results/eval_layout_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, median, now, say, write_json  # noqa: E402

from cifarlens.training.models import build_model  # noqa: E402


def forward_ms(model: torch.nn.Module, x: torch.Tensor, bf16: bool, reps: int) -> float:
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x[:16])  # warm-up: oneDNN primitive creation
        for _ in range(reps):
            t = now()
            model(x)
            times.append(now() - t)
    return 1000 * median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(a.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    for r in range(a.rounds):
        order = ("nchw", "nhwc") if r % 2 == 0 else ("nhwc", "nchw")
        for name in ("small", "vgg"):
            model = build_model(name, 100).eval()
            for prec in ("fp32", "bf16"):
                ms = {}
                for layout in order:
                    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                    ms[layout] = forward_ms(model.to(memory_format=fmt),
                                            x.contiguous(memory_format=fmt), prec == "bf16",
                                            a.reps)
                row = {"round": r, "model": name, "precision": prec, "batch": a.batch,
                       **{f"{k}_ms": v for k, v in ms.items()},
                       "speedup_nhwc": ms["nchw"] / ms["nhwc"], "load": loadavg()}
                rows.append(row)
                say(f"round {r} {name:5} {prec}: NCHW {ms['nchw']:.0f} ms, NHWC "
                    f"{ms['nhwc']:.0f} ms, x{row['speedup_nhwc']:.2f}")
    write_json(a.json, {"rows": rows, "machine": machine_info()})


if __name__ == "__main__":
    main()
