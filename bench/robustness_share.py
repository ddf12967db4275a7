#!/usr/bin/env python
"""The CPU default of `cifarlens study --robustness` against a quick-preset model's training
time, measured end to end (issue 23: at most 20% of it).

1. Unless `--run` names a finished quick-preset run, train one (`make_config("quick")`, the
   paper's model, 10 epochs of 10,000 images) on generated data in the CIFAR-100 format at the
   official sizes (500 train and 100 test images per class; throughput does not depend on the
   pixels). Its done.json records the training wall time, as every run's does.
2. Time `stages.robustness.run_robustness(run)` with the device's default: on a CPU, 500
   class-balanced test images x the 15 corruptions x 5 severities (38,000 forward passes and
   37,500 corrupted images), the same call a study makes for each run.
3. Print and record the share, with the load average around each step (the machine is shared:
   only a run with the load below 1.5 throughout is a measurement of this machine).

  PYTHONPATH=src .venv/bin/python bench/robustness_share.py --out /tmp/quick \\
      --json bench/results/robustness_share_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, say, write_json  # noqa: E402

from cifarlens.data.synth import ensure_synthetic  # noqa: E402
from cifarlens.runs import Run  # noqa: E402
from cifarlens.stages.robustness import run_robustness  # noqa: E402
from cifarlens.training.config import make_config  # noqa: E402
from cifarlens.training.loop import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the generated data and the run")
    p.add_argument("--run", default=None, help="a finished quick-preset run to reuse")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    out = Path(a.out)
    rec: dict = {"threads": torch.get_num_threads()}
    if a.run is None:
        data = out / "data"
        ensure_synthetic(data, "cifar100", train_per_class=500, test_per_class=100, seed=0,
                         label_noise=0.0)
        run_dir = out / "quick"
        rec["load_before_train"] = loadavg()
        train(make_config("quick", data_dir=str(data), device="cpu"), run_dir, resume=True,
              progress=False, log=say)
        rec["load_after_train"] = loadavg()
    else:
        run_dir = Path(a.run)
    run = Run.open(run_dir)
    rec["run"] = str(run_dir)
    rec["train_s"] = run.done["wall_time_s"]
    rec["preset_epochs"], rec["train_limit"] = run.config["epochs"], run.config["train_limit"]
    rec["load_before_robustness"] = loadavg()
    t0 = time.perf_counter()
    r = run_robustness(run_dir, device="cpu", log=say)
    rec["robustness_s"] = time.perf_counter() - t0
    rec["load_after_robustness"] = loadavg()
    rec["images"], rec["corruptions"] = r["n_images"], len(r["corruptions"])
    rec["severities"] = r["severities"]
    rec["share"] = rec["robustness_s"] / rec["train_s"]
    say(f"training {rec['train_s']:.0f} s, robustness {rec['robustness_s']:.0f} s "
        f"({r['n_images']} images x {len(r['corruptions'])} x {len(r['severities'])}): "
        f"{100 * rec['share']:.1f}% of the training time (load {rec['load_before_robustness']}"
        f" -> {rec['load_after_robustness']})")
    write_json(a.json, {"machine": machine_info(torch.device("cpu")), "result": rec})


if __name__ == "__main__":
    main()
