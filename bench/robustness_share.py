#!/usr/bin/env python
"""The CPU default of `cifarlens study --robustness` against a quick-preset model's training
time, measured end to end (issue 23: at most 20% of it).

Each round, in one process: the training rate of the paper model (SGD steps at batch 128,
`estimate.measured_rate`, `--train-budget` seconds), its inference rate (`infer_logits` on
2,000 images at the batch and precision validation uses), and then the stage itself,
`stages.robustness.run_robustness(RUN, device="cpu")` with the CPU default: 500 class-balanced
test images x the 15 corruptions x 5 severities (38,000 forward passes and 37,500 corrupted
images), the call a study makes for each of its runs. The load average is recorded around each
round: the machine is shared, and only a round whose load stays below 1.5 is a measurement of
this machine.

The quick model's training time is 10 epochs of 10,000 training images plus a 10,000-image
validation each, from the round's measured rates, and, where `--run` has finished (its
done.json), the run's own recorded wall time.

`--run` is a quick-preset run folder; without one, one is started on generated data in the
CIFAR-100 format at the official sizes (500 train and 100 test images per class; throughput
does not depend on the pixels or the weights) and trained for one epoch, enough for a best.pt.

  PYTHONPATH=src .venv/bin/python bench/robustness_share.py --out /tmp/quick --rounds 2 \\
      --json bench/results/robustness_share_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, median, random_cifar, say, write_json  # noqa: E402

from cifarlens.data.synth import ensure_synthetic  # noqa: E402
from cifarlens.runs import Run  # noqa: E402
from cifarlens.stages.robustness import run_robustness  # noqa: E402
from cifarlens.study.estimate import measured_rate  # noqa: E402
from cifarlens.training.config import make_config  # noqa: E402
from cifarlens.training.loop import train  # noqa: E402
from cifarlens.training.runtime import infer_logits  # noqa: E402

QUICK = make_config("quick")
QUICK_VAL = 10_000  # the official train set's validation split (val_fraction 0.2 of 50,000)


def quick_run(out: Path) -> Path:
    data = out / "data"
    ensure_synthetic(data, "cifar100", train_per_class=500, test_per_class=100, seed=0,
                     label_noise=0.0)
    run_dir = out / "quick"
    if not (run_dir / "checkpoints" / "best.pt").exists():
        train(make_config("quick", data_dir=str(data), device="cpu", epochs=1), run_dir,
              progress=False, log=say)
    return run_dir


def one_round(run_dir: Path, train_budget: float) -> dict:
    r: dict = {"load_before": loadavg()}
    r["train_img_s"] = measured_rate(QUICK.model, 100, 32, QUICK.batch_size, "cpu", "auto",
                                     budget_s=train_budget, max_steps=200)
    model = Run(run_dir).model()
    images, _ = random_cifar(2000)
    dev = torch.device("cpu")
    infer_logits(model, images[:200], [0.5] * 3, [0.25] * 3, device=dev, precision="bf16",
                 batch_size=200)
    t0 = time.perf_counter()
    infer_logits(model, images, [0.5] * 3, [0.25] * 3, device=dev, precision="bf16",
                 batch_size=1000)
    r["val_img_s"] = len(images) / (time.perf_counter() - t0)
    r["quick_train_s"] = QUICK.epochs * (QUICK.train_limit / r["train_img_s"]
                                         + QUICK_VAL / r["val_img_s"])
    r["load_mid"] = loadavg()
    t0 = time.perf_counter()
    rec = run_robustness(run_dir, device="cpu", log=lambda m: None)
    r["robustness_s"] = time.perf_counter() - t0
    r["load_after"] = loadavg()
    r["images"], r["conditions"] = rec["n_images"], len(rec["corruptions"]) * len(
        rec["severities"])
    r["precision"] = rec["precision"]
    r["share"] = r["robustness_s"] / r["quick_train_s"]
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the generated data and the run")
    p.add_argument("--run", default=None, help="a quick-preset run (default: start one)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-budget", type=float, default=30.0, help="seconds of training steps")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    run_dir = Path(a.run) if a.run else quick_run(Path(a.out))
    rounds = []
    for i in range(a.rounds):
        rounds.append(one_round(run_dir, a.train_budget))
        r = rounds[-1]
        say(f"round {i + 1}: load {r['load_before']} -> {r['load_after']}; train "
            f"{r['train_img_s']:.0f} img/s, validation {r['val_img_s']:.0f} img/s: quick model "
            f"{r['quick_train_s']:.0f} s; robustness {r['robustness_s']:.0f} s "
            f"({r['images']} images x {r['conditions']} conditions) = "
            f"{100 * r['share']:.1f}%")
    summary = {k: median([r[k] for r in rounds]) for k in
               ("train_img_s", "val_img_s", "quick_train_s", "robustness_s", "share")}
    done = Run(run_dir).done
    if done and done.get("wall_time_s") and Run(run_dir).config["config"]["epochs"] == QUICK.epochs:
        summary["recorded_train_s"] = done["wall_time_s"]
        summary["share_of_recorded"] = summary["robustness_s"] / done["wall_time_s"]
    say(f"median: robustness {summary['robustness_s']:.0f} s = "
        f"{100 * summary['share']:.1f}% of a quick model ({summary['quick_train_s']:.0f} s)")
    write_json(a.json, {"machine": machine_info(torch.device("cpu")), "args": vars(a),
                        "summary": summary, "rounds": rounds})


if __name__ == "__main__":
    main()
