#!/usr/bin/env python
"""The GPU benchmark suite: one command, under 8 minutes on one H200, one JSON of results.

  python bench/gpu_suite.py --out OUTDIR            (OUTDIR/gpu_suite.json + per-stage files)

Needs a CUDA build of torch and cifarlens's dependencies in this interpreter (cifarlens itself
is taken from src/ if it is not installed). Nothing is downloaded: the data is generated.

Stages, in order of importance, each under its own time limit and all under --budget-s (the JSON
is rewritten after every stage, so a stopped suite keeps what it measured):
  1. data     `cifarlens data synth --train-per-class 500 --test-per-class 100`: generated data of
              the full CIFAR-100 size (50,000 train / 10,000 test).
  2. eager    bench/train_throughput.py: batch 128, baseline model; ours (bf16, channels_last),
              ours-fp32 (TF32), ours-nocl (contiguous), ref (DataLoader, 2 workers, fp32).
  3. paper    `cifarlens train --preset paper` for one model (50 epochs, compile auto): wall time.
  4. study    `cifarlens study --preset paper` (baseline + crop-flip variant, evaluate, explain,
              report) if the command exists: wall time.
  5. compiled bench/train_throughput.py: ours vs ours-compile (default mode) vs ours-compile-ro
              (reduce-overhead = CUDA graphs); each compile costs ~40-60 s of warm-up.
  6. eval     bench/eval_throughput.py (10,000 images, bf16 and fp32, Grad-CAM) and
              bench/roofline.py (bf16/TF32 matmul rate vs achieved training FLOP/s).

Targets (docs/benchmarks.md): >= 50,000 training images/s; paper preset <= 60 s for one model;
whole study <= 3 min.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGETS = {"train_img_s": 50_000, "paper_s": 60, "study_s": 180}


class Suite:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.t0, self.budget = out, time.monotonic(), budget_s
        self.res: dict[str, Any] = {"suite": "gpu_suite", "budget_s": budget_s, "stages": {}}
        self.env = dict(os.environ)
        src = str(REPO / "src")
        self.env["PYTHONPATH"] = src + (os.pathsep + self.env["PYTHONPATH"]
                                        if self.env.get("PYTHONPATH") else "")
        self.env.setdefault("PYTHONUNBUFFERED", "1")

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def save(self) -> None:
        self.res["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        p = self.out / "gpu_suite.json"
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.res, indent=2) + "\n")
        tmp.replace(p)

    def run(self, name: str, cmd: list[str], limit_s: float, min_s: float = 20) -> dict:
        """Run one command under min(limit_s, budget left); record rc, time and output tail."""
        lim = min(limit_s, self.left() - 5)
        if lim < min_s:
            r = {"skipped": f"only {self.left():.0f} s of the suite's budget left"}
            print(f"[{name}] skipped: {r['skipped']}", flush=True)
            return r
        print(f"[{name}] {' '.join(cmd)} (limit {lim:.0f} s)", flush=True)
        t = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True,
                               timeout=lim)
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc = "timeout"
            out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                   else (e.stdout or "")) + ((e.stderr or b"").decode(errors="replace")
                                             if isinstance(e.stderr, bytes) else (e.stderr or ""))
        wall = time.monotonic() - t
        (self.out / f"{name}.log").write_text(out)
        print(f"[{name}] rc={rc} in {wall:.1f} s", flush=True)
        return {"cmd": cmd, "rc": rc, "wall_s": round(wall, 1), "tail": out[-1500:]}


def cifarlens(*args: str) -> list[str]:
    return [sys.executable, "-m", "cifarlens", *args]


# Settings of each stage: the real suite, and a --dry-run that checks the plumbing on a CPU in
# about two minutes (tiny data, the small model, 1 epoch; its numbers mean nothing).
REAL = {"device": "cuda", "synth": ["--train-per-class", "500", "--test-per-class", "100"],
        "tt": ["--steps", "100", "--rounds", "5", "--warmup", "20", "--data-steps", "100"],
        "tt_compiled": ["--steps", "100", "--rounds", "5", "--warmup", "10"],
        "eager": "ours,ours-fp32,ours-nocl,ref", "compiled": "ours,ours-compile,ours-compile-ro",
        "train": ["--preset", "paper"],
        "eval": ["--rounds", "2", "--measure", "10000", "--batch-sizes", "1000,256"],
        "roofline": ["--rounds", "3", "--train-steps", "50"]}
DRY = {"device": "cpu", "synth": ["--train-per-class", "5", "--test-per-class", "2"],
       "tt": ["--model", "small", "--steps", "1", "--rounds", "1", "--warmup", "1",
              "--images", "512", "--data-steps", "2", "--workers", "0"],
       "tt_compiled": ["--model", "small", "--steps", "1", "--rounds", "1", "--warmup", "1",
                       "--images", "512", "--data-steps", "2"],
       "eager": "ours,ref", "compiled": "ours", "train": ["--preset", "smoke", "--epochs", "1"],
       "eval": ["--rounds", "1", "--measure", "32", "--batch-sizes", "16", "--gradcam-batch", "16",
                "--precisions", "fp32"],
       "roofline": ["--rounds", "1", "--n", "256", "--reps", "1", "--train-steps", "0"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu"))
    ap.add_argument("--budget-s", type=float, default=450, help="whole suite (default 7.5 min)")
    ap.add_argument("--data", help="an existing generated/real CIFAR-100 root (skips stage 1)")
    ap.add_argument("--skip", default="",
                    help="comma-separated stages to skip: data,eager,paper,study,compiled,eval")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the suite's plumbing on the CPU with tiny settings (no GPU needed)")
    a = ap.parse_args(argv)
    P = DRY if a.dry_run else REAL
    dev = P["device"]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    s = Suite(out, a.budget_s)
    s.res["dry_run"] = a.dry_run
    skip = {x.strip() for x in a.skip.split(",") if x.strip()}

    import importlib.util

    import torch

    sys.path.insert(0, str(BENCH))
    from _common import machine_info

    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: this suite is for a GPU machine (--dry-run checks "
              "it on a CPU)", file=sys.stderr)
        return 2
    s.res["machine"] = machine_info(torch.device(dev))
    # What the stages need: train/study (tqdm, matplotlib, scipy, jinja2, platformdirs),
    # torch.compile on CUDA (triton). Missing ones are reported, not fatal.
    s.res["missing_modules"] = [m for m in ("numpy", "tqdm", "matplotlib", "scipy", "jinja2",
                                            "platformdirs") + (("triton",) if dev == "cuda" else ())
                                if importlib.util.find_spec(m) is None]
    if s.res["missing_modules"]:
        print(f"warning: missing modules {s.res['missing_modules']}", flush=True)
    smi = shutil.which("nvidia-smi")
    if smi and dev == "cuda":
        q = subprocess.run([smi, "--query-gpu=name,memory.total,power.limit,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True)
        s.res["nvidia_smi"] = q.stdout.strip()
    s.save()
    st = s.res["stages"]
    tt = [sys.executable, str(BENCH / "train_throughput.py"), "--device", dev]

    # 1. data of the full CIFAR-100 size
    data = Path(a.data) if a.data else out / "data"
    if not a.data and "data" not in skip:
        if (data / "cifar-100-python").is_dir():
            st["data"] = {"reused": str(data)}
        else:
            st["data"] = s.run("data", cifarlens("data", "synth", "--out", str(data), "--dataset",
                                                 "cifar100", *P["synth"]), 150)
        s.save()

    # 2. eager training throughput
    if "eager" not in skip:
        j = out / "train_eager.json"
        st["eager"] = s.run("eager", [*tt, *P["tt"], "--contenders", P["eager"], "--json", str(j)],
                            120)
        if j.exists():
            r = json.loads(j.read_text())
            st["eager"].update(result=r.get("contenders"), failed=r.get("failed"))
        s.save()

    # 3. the paper preset, one model
    if "paper" not in skip:
        run = out / "paper-run"
        shutil.rmtree(run, ignore_errors=True)
        st["paper"] = s.run("paper", cifarlens("train", "--data-dir", str(data), *P["train"],
                                               "--device", dev, "--out", str(run),
                                               "--no-progress"), 200, min_s=60)
        if (run / "done.json").exists():
            done = json.loads((run / "done.json").read_text())
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            st["paper"].update(
                train_wall_time_s=done.get("wall_time_s"), best_val_acc=done.get("best_val_acc"),
                epoch_img_s=[round(r["images_per_s"]) for r in rows],
                epoch_time_s=[round(r["epoch_time"], 2) for r in rows],
                epoch_train_time_s=[round(r["train_time"], 2) for r in rows])
        s.save()

    # 4. the whole study, if the command exists
    if "study" not in skip:
        h = subprocess.run(cifarlens("study", "--help"), cwd=REPO, env=s.env, capture_output=True,
                           text=True)
        if h.returncode != 0:
            st["study"] = {"skipped": "`cifarlens study --help` failed: " + h.stderr[-300:]}
            print("[study] skipped: the study command is not available", flush=True)
        else:
            sdir = out / "study"
            shutil.rmtree(sdir, ignore_errors=True)
            st["study"] = s.run("study", cifarlens("study", *P["train"], "--data-dir", str(data),
                                                   "--device", dev, "--out", str(sdir),
                                                   "--no-progress"), 200, min_s=60)
            st["study"]["finished"] = (sdir / "summary.json").exists()
        s.save()

    # 5. torch.compile
    if "compiled" not in skip:
        j = out / "train_compiled.json"
        st["compiled"] = s.run("compiled", [*tt, *P["tt_compiled"], "--contenders",
                                            P["compiled"], "--json", str(j)], 200, min_s=90)
        if j.exists():
            r = json.loads(j.read_text())
            st["compiled"].update(result=r.get("contenders"), failed=r.get("failed"))
        s.save()

    # 6. evaluation, Grad-CAM and the roofline
    if "eval" not in skip:
        j = out / "eval.json"
        st["eval"] = s.run("eval", [sys.executable, str(BENCH / "eval_throughput.py"), "--device",
                                    dev, *P["eval"], "--json", str(j)], 90)
        if j.exists():
            e = json.loads(j.read_text())
            st["eval"]["result"] = {"eval": e["eval"], "gradcam": e["gradcam"]}
        j = out / "roofline.json"
        st["roofline"] = s.run("roofline", [sys.executable, str(BENCH / "roofline.py"),
                                            "--device", dev, *P["roofline"], "--json", str(j)], 60)
        if j.exists():
            r = json.loads(j.read_text())
            st["roofline"]["result"] = {k: r.get(k) for k in ("matmul_gflops", "train_interleaved")}
        s.save()

    # Summary against the targets.
    best = 0.0
    for key in ("eager", "compiled"):
        for name, c in (st.get(key, {}).get("result") or {}).items():
            if name.startswith("ours"):
                best = max(best, c["median_img_s"])
    summ = {"best_train_img_s": round(best), "target_train_img_s": TARGETS["train_img_s"],
            "paper_wall_s": st.get("paper", {}).get("wall_s"), "target_paper_s": TARGETS["paper_s"],
            "study_wall_s": st.get("study", {}).get("wall_s")
            if st.get("study", {}).get("finished") else None,
            "target_study_s": TARGETS["study_s"]}
    s.res["summary"] = summ
    s.save()
    print(json.dumps(summ, indent=2))
    print(f"wrote {out / 'gpu_suite.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
