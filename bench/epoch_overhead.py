#!/usr/bin/env python
"""Per-epoch bookkeeping of `cifarlens train`: the time outside training steps and validation.

Trains the baseline (paper) model, whose checkpoints have their real size (an 80 MiB resume
checkpoint, a 40 MiB best.pt), for a few epochs of very few steps on generated data, and reads
what train.py records per epoch in metrics.jsonl: `train_time` (the steps, synchronized),
`val_time` and `other_time` (everything else since the previous epoch's row: the checkpoint
hand-off, logs, the epoch's setup). Two modes, alternating run by run (ABAB):

  background   train.py as it is: each epoch's files (best.pt, checkpoint, metrics, curves) are
               written by a background thread from a CPU copy of the state
  synchronous  the same writes on the training thread (train.WRITE_IN_BACKGROUND = False): what
               every epoch cost before, and what the background thread now does concurrently

Reported: per mode, the median and max of other_time over epochs 2..E of every run (epoch 1 has
no previous epoch's bookkeeping in it), train and val time, and the final flush (done.json
waits for the last epoch's files). Target (issue 14): other_time <= 0.15 s for the baseline.

  OMP_NUM_THREADS=1 .venv/bin/python bench/epoch_overhead.py --json bench/results/epoch_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, say, write_json  # noqa: E402

from cifarlens.data.synth import write_synthetic  # noqa: E402
from cifarlens.training import writer
from cifarlens.training.config import make_config
from cifarlens.training.loop import train


def one_run(data: Path, out: Path, mode: str, a: argparse.Namespace) -> dict:
    cfg = make_config("paper", data_dir=str(data), device="cpu", model=a.model,
                        epochs=a.epochs, batch_size=a.batch_size, eval_batch_size=a.batch_size)
    writer.WRITE_IN_BACKGROUND = mode == "background"
    try:
        t0 = time.perf_counter()
        done = train(cfg, out, progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
    finally:
        writer.WRITE_IN_BACKGROUND = True
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ck = out / "checkpoints"
    return {"mode": mode, "wall_s": round(wall, 3), "final_write_s": round(done["final_write_s"], 4),
            "other_time": [round(r["other_time"], 4) for r in rows],
            "epoch_time": [round(r["epoch_time"], 3) for r in rows],
            "train_time": [round(r["train_time"], 3) for r in rows],
            "val_time": [round(r["val_time"], 3) for r in rows],
            "ckpt_mib": round(max(p.stat().st_size for p in ck.glob("ckpt-e*.pt")) / 2**20, 1),
            "best_mib": round((ck / "best.pt").stat().st_size / 2**20, 1),
            "curves_png": (out / "curves.png").exists()}


def summarize(runs: list[dict]) -> dict:
    other = [x for r in runs for x in r["other_time"][1:]]
    train = [x for r in runs for x in r["train_time"]]
    val = [x for r in runs for x in r["val_time"]]
    epoch = [o + t + v for r in runs for o, t, v in
             zip(r["other_time"][1:], r["train_time"][1:], r["val_time"][1:], strict=True)]
    return {"epochs_counted": len(other), "other_time_median_s": round(statistics.median(other), 4),
            "other_time_max_s": round(max(other), 4),
            "train_time_median_s": round(statistics.median(train), 3),
            "val_time_median_s": round(statistics.median(val), 3),
            "epoch_time_median_s": round(statistics.median(epoch), 3),
            "final_write_median_s": round(statistics.median(r["final_write_s"] for r in runs), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="runs per mode, alternating")
    ap.add_argument("--per-class", type=int, default=4,
                    help="generated training images per class (100 classes; 20%% go to val)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--modes", default="background,synchronous")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not set(modes) <= {"background", "synchronous"}:
        ap.error("--modes: background and/or synchronous")
    with tempfile.TemporaryDirectory(prefix="cifarlens-overhead-") as tmp:
        root = Path(tmp)
        write_synthetic(root / "data", "cifar100", train_per_class=a.per_class, test_per_class=1,
                        seed=0)
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        k = 0
        for rnd in range(a.rounds):
            for m in (modes if rnd % 2 == 0 else modes[::-1]):
                r = one_run(root / "data", root / f"run{k}", m, a)
                k += 1
                runs[m].append(r)
                say(f"round {rnd + 1} {m}: other_time {r['other_time']} train {r['train_time']}")
    res = {"machine": machine_info(), "settings": vars(a), "runs": runs,
           "summary": {m: summarize(rs) for m, rs in runs.items()}, "target_other_time_s": 0.15}
    print(json.dumps(res["summary"], indent=2))
    write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
