#!/usr/bin/env python
"""The neighbour analysis's cost beside training: the feature pass against one quick-preset run.

The quick preset trains the paper's VGG for 10 epochs on 10,000 training images and validates
on 10,000 images after each epoch (full-size data; val in the training precision). Its
training time is therefore 10 x (10,000 / training img/s + 10,000 / validation img/s). The
feature pass is one forward over the 10,000 training images (`training.features.features`,
fp32 by default; bf16 shown beside it), and, where the test features are not taken from
evaluate's own forward, one more over the 10,000 test images.

Method: the four throughputs are measured in the same process and the same rounds (order
reversed every other round), on CIFAR-shaped random images (speed does not depend on the
pixels): training steps as train.py takes them (bench/train_throughput.py's `ours`: Batches,
crop-flip, train._make_step, bf16 where the CPU has it, channels_last), validation as
training.runtime.infer_logits in the training precision, and the feature pass. Medians over rounds.

Also measured: `nearest` over 40,000 x 512 float16 training features (the paper preset's
split and the VGG's feature width) for 1,000 and 10,000 queries, time and peak numpy memory
(tracemalloc), and, with --run, how far bf16 features move neighbours on a trained model.

  OMP_NUM_THREADS=1 .venv/bin/python bench/feature_pass.py --rounds 3 --run /tmp/h24/smoke \
      --json bench/results/feature_pass_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, median, now, random_cifar, say, write_json  # noqa: E402
from train_throughput import build_ours  # noqa: E402

from cifarlens.analysis.neighbours import nearest  # noqa: E402
from cifarlens.training.features import features  # noqa: E402
from cifarlens.training.models import build_model  # noqa: E402
from cifarlens.training.runtime import infer_logits, resolve_precision  # noqa: E402

QUICK = {"epochs": 10, "train_images": 10_000, "val_images": 10_000, "test_images": 10_000,
         "batch_size": 128}
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def throughputs(rounds: int, images: int, steps: int) -> dict[str, list[float]]:
    """img/s of training steps, validation and the feature pass (fp32, bf16), per round."""
    device = torch.device("cpu")
    x, y = random_cifar(max(images, QUICK["batch_size"] * steps), seed=0)
    train = build_ours("ours", x, y, NORM["mean"], NORM["std"], device, QUICK["batch_size"],
                       model="vgg")
    torch.manual_seed(0)
    model = build_model("vgg", 100).eval()
    train_prec = resolve_precision("auto", device)
    xs = x[:images]

    def t_train() -> float:
        return steps * QUICK["batch_size"] / train.run_steps(steps)[0]

    def t_val() -> float:
        t0 = now()
        infer_logits(model, xs, NORM["mean"], NORM["std"], device=device, precision=train_prec)
        return images / (now() - t0)

    def t_feat(precision: str):
        def run() -> float:
            t0 = now()
            features(model, xs, NORM, precision=precision)
            return images / (now() - t0)
        return run

    tasks = {"train": t_train, "val": t_val, "features_fp32": t_feat("fp32"),
             "features_bf16": t_feat("bf16")}
    for f in tasks.values():  # warm-up: first calls pay oneDNN's kernel selection
        f()
    out: dict[str, list[float]] = {k: [] for k in tasks}
    for r in range(rounds):
        for name in (list(tasks) if r % 2 == 0 else list(reversed(tasks))):
            out[name].append(tasks[name]())
            say(f"round {r + 1}: {name} {out[name][-1]:.1f} img/s")
    out["train_precision"] = train_prec  # type: ignore[assignment]
    return out


def cost(tp: dict) -> dict[str, float]:
    med = {k: median(v) for k, v in tp.items() if isinstance(v, list)}
    train_s = QUICK["epochs"] * (QUICK["train_images"] / med["train"]
                                 + QUICK["val_images"] / med["val"])
    res = {"img_s": med, "quick_run_s": train_s}
    for prec in ("fp32", "bf16"):
        feat = QUICK["train_images"] / med[f"features_{prec}"]
        res[f"train_split_{prec}_s"] = feat
        res[f"train_split_{prec}_share"] = feat / train_s
        res[f"train_and_test_{prec}_share"] = (feat + QUICK["test_images"]
                                               / med[f"features_{prec}"]) / train_s
    return res


def nearest_cost(n_train: int = 40_000, dim: int = 512) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    train = np.abs(rng.normal(size=(n_train, dim))).astype(np.float16)  # ReLU-like features
    labels = rng.integers(0, 100, n_train)
    rows = []
    for q in (1_000, 10_000):
        query = np.abs(rng.normal(size=(q, dim))).astype(np.float16)
        classes = rng.integers(0, 100, (q, 2))
        tracemalloc.start()
        t0 = now()
        nearest(query, train, labels, classes, k=8)
        dt = now() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"queries": q, "train": n_train, "dim": dim, "seconds": dt,
                     "peak_mib": peak / 2**20})
        say(f"nearest: {q} queries x {n_train} x {dim}: {dt:.2f} s, peak {peak / 2**20:.0f} MiB")
    return rows


def precision_effect(run_dir: str) -> dict[str, float]:
    """On a trained run: share of each test image's 8 neighbours (fp32) kept under bf16."""
    from cifarlens.runs import Run

    run = Run.open(run_dir)
    data, model = run.data(), run.model()
    xtr, ytr, _ = run.split_arrays("train", data)
    xte, _, _ = run.split_arrays("test", data)
    got = {}
    for prec in ("fp32", "bf16"):
        got[prec] = nearest(features(model, xte, run.norm, precision=prec),
                            features(model, xtr, run.norm, precision=prec), ytr)["all_index"]
    kept = [len(set(a) & set(b)) / len(a) for a, b in zip(got["fp32"], got["bf16"], strict=True)]
    return {"run": str(run_dir), "model": run.config["model"], "test_images": len(kept),
            "neighbours_kept_bf16": float(np.mean(kept))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=1000, help="images per timed pass")
    ap.add_argument("--steps", type=int, default=4, help="training steps per timed round")
    ap.add_argument("--run", help="a trained run: how far bf16 moves the neighbours")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    tp = throughputs(a.rounds, a.images, a.steps)
    res = {"method": __doc__, "quick": QUICK, "rounds": tp, **cost(tp),
           "nearest": nearest_cost(), "machine": machine_info()}
    if a.run:
        res["precision_effect"] = precision_effect(a.run)
    say(f"quick run {res['quick_run_s']:.0f} s; feature pass over its training split: fp32 "
        f"{res['train_split_fp32_s']:.1f} s ({100 * res['train_split_fp32_share']:.1f}%), bf16 "
        f"{res['train_split_bf16_s']:.1f} s ({100 * res['train_split_bf16_share']:.1f}%); with "
        f"the test split too: fp32 {100 * res['train_and_test_fp32_share']:.1f}%, bf16 "
        f"{100 * res['train_and_test_bf16_share']:.1f}%")
    write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
