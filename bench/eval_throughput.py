#!/usr/bin/env python
"""Evaluation and Grad-CAM throughput of the baseline model, with peak memory.

Evaluation is `cifarlens.train.infer_logits` (eval mode, batch 1000 as train.py uses, or others
with --batch-sizes; the precision train.py would pick, or fp32) over a CIFAR-100-sized test set (10,000 uint8 images). Grad-CAM is
`cifarlens.explain.gradcam(model, images, targets, batch_size=256)` when that module exists;
otherwise it is skipped with a message (and the JSON says so).

Every measurement runs in its own child process so that its peak memory is its own:
resource.getrusage(RUSAGE_SELF).ru_maxrss on the CPU (the child's whole peak RSS: Python, torch,
model, data and the pass; the RSS after setup is reported beside it), and
torch.cuda.max_memory_allocated on a GPU. Passes alternate between precisions in rounds. By
default each pass times a 2,000-image subset and the 10,000-image time is scaled from it (state
--measure 10000 to time the whole set); throughput does not depend on which images are used.

  .venv/bin/python bench/eval_throughput.py --rounds 3 --json bench/results/eval_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    TEST_IMAGES,
    loadavg,
    machine_info,
    maxrss_mib,
    median,
    now,
    random_cifar,
    resolve_device,
    say,
    sync,
    write_json,
)

from cifarlens.data.split import channel_stats, normalize  # noqa: E402
from cifarlens.training.models import build_model  # noqa: E402
from cifarlens.training.runtime import infer_logits, resolve_precision


def find_gradcam():
    """The Grad-CAM entry point, or (None, why it is not there)."""
    try:
        from cifarlens.stages import explain
    except ImportError as e:
        return None, f"cifarlens.explain is not importable ({e})"
    fn = getattr(explain, "gradcam", None)
    if fn is None:
        return None, "cifarlens.explain has no gradcam()"
    return fn, None


def load_model(run: str | None, device):
    if run:
        from cifarlens.runs import load_model as lm

        model, _ = lm(run, "best")
    else:
        torch.manual_seed(0)
        model = build_model("baseline", 100)
    model = model.to(device).eval()
    if device.type == "cuda":  # train.py's layout on CUDA
        model = model.to(memory_format=torch.channels_last)
    return model


def child(a) -> dict:
    """One timed pass in this (child) process; returns its numbers."""
    device = resolve_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    x, y = random_cifar(a.measure, seed=1)
    mean, std = channel_stats(x[: min(len(x), 2000)])
    model = load_model(a.run, device)
    rss_setup = maxrss_mib()
    if a.part == "eval":
        prec = resolve_precision(a.precision, device)

        def run(xs):
            return infer_logits(model, xs, mean, std, device=device, precision=prec,
                                  batch_size=a.batch_size)

        run(x[: min(len(x), 2 * a.batch_size)])  # warm-up (allocator, oneDNN/cuDNN kernels)
        what = f"infer_logits, {prec}, batch {a.batch_size}"
    else:
        fn, why = find_gradcam()
        if fn is None:
            return {"skipped": why}
        xs_all = normalize(torch.from_numpy(x), torch.tensor(mean), torch.tensor(std))
        ys_all = torch.from_numpy(y)

        def run(xs):
            n = len(xs)
            return fn(model, xs_all[:n], ys_all[:n], batch_size=a.gradcam_batch)

        run(x[: min(len(x), a.gradcam_batch)])
        what = f"gradcam, batch_size {a.gradcam_batch}, fp32 inputs"
        prec = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = now()
    run(x)
    sync(device)
    dt = now() - t0
    out = {"what": what, "precision": prec, "images_timed": len(x), "seconds": round(dt, 3),
           "img_s": round(len(x) / dt, 2),
           f"time_for_{TEST_IMAGES}_s": round(TEST_IMAGES * dt / len(x), 2),
           "scaled_from_subset": len(x) != TEST_IMAGES,
           "rss_after_setup_mib": round(rss_setup, 1), "peak_rss_mib": round(maxrss_mib(), 1),
           "threads": torch.get_num_threads(), "load": loadavg()}
    if device.type == "cuda":
        out["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def spawn(a, part: str, precision: str | None = None, batch_size: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--_child", part, "--device", a.device, "--measure",
           str(a.measure), "--batch-size", str(batch_size or 1000), "--gradcam-batch",
           str(a.gradcam_batch)]
    if precision:
        cmd += ["--precision", precision]
    if a.run:
        cmd += ["--run", a.run]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"child {part} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--measure", type=int, default=2000,
                    help="images timed per pass (10000 = the whole test set, else scaled)")
    ap.add_argument("--batch-sizes", default="1000",
                    help="evaluation batches to compare, e.g. 1000,256 (train.py: 1000)")
    ap.add_argument("--batch-size", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--gradcam-batch", type=int, default=256)
    ap.add_argument("--no-gradcam", action="store_true")
    ap.add_argument("--run", help="a trained run folder to load (default: untrained baseline)")
    ap.add_argument("--json")
    ap.add_argument("--_child", dest="part", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.part:
        print(json.dumps(child(a)))
        return 0

    device = resolve_device(a.device)
    precs = [p.strip() for p in a.precisions.split(",") if p.strip()]
    sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    combos = [(p, b) for p in precs for b in sizes]
    say(f"device {device}, {torch.get_num_threads()} threads, load {loadavg()}")
    evals: dict[str, list[dict]] = {f"{p}/b{b}": [] for p, b in combos}
    for r in range(a.rounds):
        for p, b in combos if r % 2 == 0 else combos[::-1]:
            res = spawn(a, "eval", p, b)
            evals[f"{p}/b{b}"].append(res)
            say(f"  round {r + 1} eval {p}/b{b} ({res['precision']}): {res['img_s']:.1f} img/s, "
                f"peak RSS {res['peak_rss_mib']:.0f} MiB (load {res['load']})")
    summary = {}
    for p, rs in evals.items():
        med = median([r["img_s"] for r in rs])
        summary[p] = {"precision": rs[0]["precision"], "rounds_img_s": [r["img_s"] for r in rs],
                      "median_img_s": round(med, 2),
                      f"time_for_{TEST_IMAGES}_s": round(TEST_IMAGES / med, 1),
                      "peak_rss_mib_max": max(r["peak_rss_mib"] for r in rs),
                      "rss_after_setup_mib": rs[0]["rss_after_setup_mib"],
                      **({"peak_cuda_allocated_mib": max(r["peak_cuda_allocated_mib"] for r in rs)}
                         if "peak_cuda_allocated_mib" in rs[0] else {})}
    keys = list(evals)
    for i, k1 in enumerate(keys):  # every pair, as medians of per-round ratios
        for k2 in keys[i + 1:]:
            ratios = [x["img_s"] / y["img_s"] for x, y in zip(evals[k1], evals[k2], strict=True)]
            summary[f"ratio {k1} vs {k2} (median)"] = round(median(ratios), 3)

    if a.no_gradcam:
        gc = {"skipped": "--no-gradcam"}
    else:
        gc = spawn(a, "gradcam")
        if "skipped" in gc:
            say(f"Grad-CAM skipped: {gc['skipped']}")
        else:
            say(f"  Grad-CAM: {gc['img_s']:.1f} img/s, peak RSS {gc['peak_rss_mib']:.0f} MiB")
    out = {"bench": "eval_throughput", "machine": machine_info(device),
           "settings": {k: v for k, v in vars(a).items() if k not in ("part", "precision")},
           "eval": summary, "eval_rounds": evals, "gradcam": gc}
    for p in evals:
        s = summary[p]
        print(f"eval {p:10s} ({s['precision']}): {s['median_img_s']:.1f} img/s, "
              f"{s[f'time_for_{TEST_IMAGES}_s']:.1f} s per 10,000 images, peak RSS "
              f"{s['peak_rss_mib_max']:.0f} MiB (after setup {s['rss_after_setup_mib']:.0f} MiB)")
    print("gradcam: " + (f"skipped ({gc['skipped']})" if "skipped" in gc else
                         f"{gc['img_s']:.1f} img/s, {gc[f'time_for_{TEST_IMAGES}_s']:.1f} s per "
                         f"10,000 images, peak RSS {gc['peak_rss_mib']:.0f} MiB"))
    write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
