#!/usr/bin/env python
"""The GPU benchmark suite, run as the lent device machine runs it: one H200, its own python3.

The device's python3 has a CUDA build of torch (2.11, CUDA 13.0), triton and every cifarlens
dependency except platformdirs (not needed: the suite gives every command --data-dir and
CIFARLENS_DATA). Nothing is installed or downloaded: the data is generated. The suite puts src/
on PYTHONPATH for itself and its commands; never run it through scripts/env.sh there.

A device command runs at most 600 s and brings back at most 8 files, so the suite writes exactly
two into --out: gpu_suite.json (results) and gpu_suite.tar.gz (every log, stage JSON and the
runs' config/metrics/done files). Both are rewritten after every stage, so a command cut short
keeps what it measured, including the per-epoch rows of a training cut by its limit. Its
working files (data, runs) stay in --work. The two commands, sized to leave time to rerun one
within 15 minutes of device time (they are checked on a CPU with --dry-run, tests/test_gpu_suite.py):

  python3 bench/gpu_suite.py --plan a --out $OUT      # ~390 s: data, eager, paper, eval
  python3 bench/gpu_suite.py --plan b --out $OUT      # ~300 s: data, study, compiled

Stages:
  data      `cifarlens data synth --train-per-class 500 --test-per-class 100`: full CIFAR-100 size
  eager     bench/train_throughput.py, batch 128, baseline: ours (the headline: the step mode
            `--compile auto` trains with on one GPU, i.e. CUDA graphs), ours-eager, ours-fp32,
            ours-det (deterministic cuDNN: the cost of bit-exact resume), ref (DataLoader)
  paper     `cifarlens train --preset paper` for one model: wall time, per-epoch train/val/other
  study     `cifarlens study --preset paper` (two models, evaluate, explain, report): wall time
  compiled  bench/train_throughput.py: ours vs ours-compile (torch.compile, ~50 s warm-up each)
  eval      bench/eval_throughput.py and bench/roofline.py

Targets (docs/benchmarks.md): >= 50,000 training images/s in the mode training uses; paper preset
<= 60 s for one model; whole study <= 3 min.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from cifarlens.training.runtime import resolve_graphs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGETS = {"train_img_s": 50_000, "paper_s": 60, "study_s": 180}
STAGES = ("data", "eager", "paper", "study", "compiled", "eval")
# The two device commands: stages and the suite's own budget (the command's timeout_s adds ~20 s).
PLANS = {"a": (("data", "eager", "paper", "eval"), 380.0),
         "b": (("data", "study", "compiled"), 290.0),
         "all": (STAGES, 560.0)}
ARCHIVE_SUFFIXES = {".log", ".json", ".jsonl", ".csv", ".md", ".txt"}
ARCHIVE_MAX_FILE = 4 * 2**20


class Suite:
    def __init__(self, out: Path, work: Path, budget_s: float):
        self.out, self.work, self.t0, self.budget = out, work, time.monotonic(), budget_s
        self.res: dict[str, Any] = {"suite": "gpu_suite", "budget_s": budget_s, "stages": {}}
        self.env = dict(os.environ)
        src = str(REPO / "src")
        self.env["PYTHONPATH"] = src + (os.pathsep + self.env["PYTHONPATH"]
                                        if self.env.get("PYTHONPATH") else "")
        self.env["CIFARLENS_DATA"] = str(work / "data")  # never the user cache (platformdirs)
        self.env.setdefault("PYTHONUNBUFFERED", "1")

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def save(self) -> None:
        """gpu_suite.json and gpu_suite.tar.gz, each replaced atomically: always a whole pair."""
        self.res["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        text = json.dumps(self.res, indent=2) + "\n"
        (self.work / "gpu_suite.json").write_text(text)
        _atomic(self.out / "gpu_suite.json", text.encode())
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for p in sorted(self.work.rglob("*")):
                rel = p.relative_to(self.work)
                if (p.is_file() and rel.parts[0] != "data" and p.stat().st_size <= ARCHIVE_MAX_FILE
                        and (p.suffix in ARCHIVE_SUFFIXES or p.name == "curves.png")):
                    tar.add(p, arcname=str(Path("gpu_suite") / rel))
        _atomic(self.out / "gpu_suite.tar.gz", buf.getvalue())

    def run(self, name: str, cmd: list[str], limit_s: float, min_s: float = 20,
            env: dict[str, str] | None = None) -> dict:
        """Run one command under min(limit_s, budget left); record rc, time and output tail."""
        lim = min(limit_s, self.left() - 5)
        if lim < min_s:
            r = {"skipped": f"only {self.left():.0f} s of the suite's budget left"}
            print(f"[{name}] skipped: {r['skipped']}", flush=True)
            return r
        print(f"[{name}] {' '.join(cmd)} (limit {lim:.0f} s)", flush=True)
        t = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=REPO, env={**self.env, **(env or {})}, capture_output=True,
                               text=True, timeout=lim)
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = "timeout", _text(e.stdout) + _text(e.stderr)
        wall = time.monotonic() - t
        (self.work / f"{name}.log").write_text(out)
        print(f"[{name}] rc={rc} in {wall:.1f} s", flush=True)
        return {"cmd": cmd, "rc": rc, "wall_s": round(wall, 1), "tail": out[-1500:]}


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def cifarlens(*args: str) -> list[str]:
    return [sys.executable, "-m", "cifarlens", *args]


def run_rows(run: Path) -> dict[str, Any]:
    """A training run's per-epoch numbers, also of a run cut short (metrics.jsonl is rewritten
    after every epoch), and its summary if it finished."""
    r: dict[str, Any] = {}
    m = run / "metrics.jsonl"
    rows = [json.loads(x) for x in m.read_text().splitlines()] if m.exists() else []
    r["epochs_done"] = len(rows)
    for key in ("images_per_s", "epoch_time", "train_time", "val_time", "other_time"):
        if rows and key in rows[0]:
            r[f"epoch_{key}"] = [round(x[key], 4 if key == "other_time" else 2) for x in rows]
    if len(rows) > 1 and "images_per_s" in rows[0]:
        r["median_img_s_after_epoch_1"] = round(median(x["images_per_s"] for x in rows[1:]))
    if len(rows) > 1 and "other_time" in rows[0]:
        r["median_other_time_s"] = round(median(x["other_time"] for x in rows[1:]), 4)
    if (run / "done.json").exists():
        done = json.loads((run / "done.json").read_text())
        r.update({k: done.get(k) for k in ("wall_time_s", "best_val_acc", "final_write_s",
                                           "step_mode", "val_precision")})
    return r


# Settings of each stage: the real suite, and a --dry-run that checks the plumbing on a CPU in a
# minute or two (tiny data, the small model, 1 epoch; its numbers mean nothing).
REAL = {"device": "cuda", "synth": ["--train-per-class", "500", "--test-per-class", "100"],
        "tt": ["--steps", "100", "--rounds", "5", "--warmup", "20", "--data-steps", "100"],
        "tt_compiled": ["--steps", "100", "--rounds", "5", "--warmup", "10"],
        "eager": "ours,ours-eager,ours-fp32,ours-det,ref", "compiled": "ours,ours-compile",
        "train": ["--preset", "paper"],
        "eval": ["--rounds", "2", "--measure", "10000", "--batch-sizes", "1000,256"],
        "roofline": ["--rounds", "3", "--train-steps", "50"]}
DRY = {"device": "cpu", "synth": ["--train-per-class", "5", "--test-per-class", "2"],
       "tt": ["--model", "small", "--steps", "1", "--rounds", "1", "--warmup", "1",
              "--images", "512", "--data-steps", "2", "--workers", "0"],
       "tt_compiled": ["--model", "small", "--steps", "1", "--rounds", "1", "--warmup", "1",
                       "--images", "512", "--data-steps", "2"],
       "eager": "ours,ours-eager,ref", "compiled": "ours",
       "train": ["--preset", "smoke", "--epochs", "2"],
       "eval": ["--rounds", "1", "--measure", "32", "--batch-sizes", "16", "--gradcam-batch", "16",
                "--precisions", "fp32"],
       "roofline": ["--rounds", "1", "--n", "256", "--reps", "1", "--train-steps", "0"]}
# Per-stage limits (s) and the least time worth starting a stage with.
LIMITS = {"data": (120, 20), "eager": (150, 20), "paper": (200, 60), "study": (230, 60),
          "compiled": (200, 90), "eval": (60, 20), "roofline": (45, 15)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu"),
                    help="where gpu_suite.json and gpu_suite.tar.gz go (the device's $OUT)")
    ap.add_argument("--work", help="working folder for data, runs and logs (default: "
                                   "a gpu_suite-work folder in the system's temp folder)")
    ap.add_argument("--plan", choices=sorted(PLANS), default="all",
                    help="a: data,eager,paper,eval (~390 s); b: data,study,compiled (~300 s); "
                         "all: every stage (default)")
    ap.add_argument("--budget-s", type=float, help="the whole suite (default: the plan's)")
    ap.add_argument("--data", help="an existing generated/real CIFAR-100 root (skips stage data)")
    ap.add_argument("--skip", default="", help=f"comma-separated stages to skip: {','.join(STAGES)}")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the suite's plumbing on the CPU with tiny settings (no GPU needed)")
    a = ap.parse_args(argv)
    P = DRY if a.dry_run else REAL
    dev = P["device"]
    stages, budget = PLANS[a.plan]
    skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if skip - set(STAGES):
        ap.error(f"--skip: unknown stages {sorted(skip - set(STAGES))}")
    todo = [s for s in stages if s not in skip]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import tempfile

    work = Path(a.work or Path(tempfile.gettempdir()) / "gpu_suite-work").resolve()
    if work == out or out in work.parents:
        ap.error("--work must not be inside --out (only two files go back from a device)")
    marker = work / ".gpu_suite-work"
    if work.is_dir() and any(work.iterdir()) and not marker.exists():
        ap.error(f"--work {work} is not empty and not a previous suite's working folder")
    shutil.rmtree(work, ignore_errors=True)  # only ever a folder this suite made
    work.mkdir(parents=True)
    marker.write_text("made by bench/gpu_suite.py; removed by its next run\n")
    s = Suite(out, work, a.budget_s or budget)
    s.res.update(dry_run=a.dry_run, plan=a.plan, stages_planned=todo)

    import importlib.util

    import torch

    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(REPO / "src"))
    from _common import machine_info


    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: this suite is for a GPU machine (--dry-run checks "
              "it on a CPU)", file=sys.stderr)
        return 2
    s.res["machine"] = machine_info(torch.device(dev))
    # What the stages import (platformdirs is not among them); missing ones are reported.
    s.res["missing_modules"] = [m for m in ("numpy", "tqdm", "matplotlib", "scipy", "jinja2")
                                + (("triton",) if dev == "cuda" else ())
                                if importlib.util.find_spec(m) is None]
    if s.res["missing_modules"]:
        print(f"warning: missing modules {s.res['missing_modules']}", flush=True)
    # The headline is the step mode train.py uses for one process on this device, nothing else.
    mode = "graphs" if resolve_graphs("auto", dev, 1) else "eager"
    s.res["training_step_mode"] = mode
    smi = shutil.which("nvidia-smi")
    if smi and dev == "cuda":
        q = subprocess.run([smi, "--query-gpu=name,memory.total,power.limit,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True)
        s.res["nvidia_smi"] = q.stdout.strip()
    s.save()
    st = s.res["stages"]
    tt = [sys.executable, str(BENCH / "train_throughput.py"), "--device", dev]

    data = Path(a.data) if a.data else work / "data"
    if "data" in todo and not a.data:
        st["data"] = s.run("data", cifarlens("data", "synth", "--out", str(data), "--dataset",
                                             "cifar100", *P["synth"]), *LIMITS["data"])
        s.save()

    if "eager" in todo:
        j = work / "train_eager.json"
        st["eager"] = s.run("eager", [*tt, *P["tt"], "--contenders", P["eager"], "--json", str(j)],
                            *LIMITS["eager"], env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
        if j.exists():
            r = json.loads(j.read_text())
            st["eager"].update(result=r.get("contenders"), failed=r.get("failed"))
        s.save()

    if "paper" in todo:
        run = work / "paper-run"
        st["paper"] = s.run("paper", cifarlens("train", "--data-dir", str(data), *P["train"],
                                               "--device", dev, "--out", str(run),
                                               "--no-progress"), *LIMITS["paper"])
        st["paper"].update(run_rows(run))
        s.save()

    if "study" in todo:
        h = subprocess.run(cifarlens("study", "--help"), cwd=REPO, env=s.env, capture_output=True,
                           text=True)
        if h.returncode != 0:
            st["study"] = {"skipped": "`cifarlens study --help` failed: " + h.stderr[-300:]}
            print("[study] skipped: the study command is not available", flush=True)
        else:
            sdir = work / "study"
            # one seed per arm: the 3-minute target is for one pair (2 paper runs + analysis);
            # the default 3-seed study trains 3 pairs, about 3x the training time
            st["study"] = s.run("study", cifarlens("study", *P["train"], "--data-dir", str(data),
                                                   "--device", dev, "--out", str(sdir),
                                                   "--seeds", "1", "--no-progress"),
                                *LIMITS["study"])
            st["study"]["finished"] = (sdir / "summary.json").exists()
            st["study"]["runs"] = {str(m.parent.relative_to(sdir)): run_rows(m.parent)
                                   for m in sorted(sdir.rglob("metrics.jsonl"))}
        s.save()

    if "compiled" in todo:
        j = work / "train_compiled.json"
        st["compiled"] = s.run("compiled", [*tt, *P["tt_compiled"], "--contenders",
                                            P["compiled"], "--json", str(j)], *LIMITS["compiled"])
        if j.exists():
            r = json.loads(j.read_text())
            st["compiled"].update(result=r.get("contenders"), failed=r.get("failed"))
        s.save()

    if "eval" in todo:
        j = work / "eval.json"
        st["eval"] = s.run("eval", [sys.executable, str(BENCH / "eval_throughput.py"), "--device",
                                    dev, *P["eval"], "--json", str(j)], *LIMITS["eval"])
        if j.exists():
            e = json.loads(j.read_text())
            st["eval"]["result"] = {"eval": e["eval"], "gradcam": e["gradcam"]}
        j = work / "roofline.json"
        st["roofline"] = s.run("roofline", [sys.executable, str(BENCH / "roofline.py"),
                                            "--device", dev, *P["roofline"], "--json", str(j)],
                               *LIMITS["roofline"])
        if j.exists():
            r = json.loads(j.read_text())
            st["roofline"]["result"] = {k: r.get(k) for k in ("matmul_gflops", "train_interleaved")}
        s.save()

    s.res["summary"] = summarize(st, mode)
    s.save()
    print(json.dumps(s.res["summary"], indent=2))
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.tar.gz'}")
    return 0


def summarize(st: dict, mode: str) -> dict[str, Any]:
    """Against the targets. The training headline is the contender `ours`, which runs the step
    mode train.py uses (`mode`); the other variants are listed, never promoted to the headline."""
    eager = (st.get("eager") or {}).get("result") or {}
    ours = eager.get("ours") or {}
    paper = st.get("paper") or {}
    study = st.get("study") or {}
    return {
        "training_step_mode": mode,
        "headline_train_img_s": ours.get("median_img_s"),
        "headline_contender_step_mode": ours.get("step_mode"),
        "target_train_img_s": TARGETS["train_img_s"],
        "paper_run_step_mode": paper.get("step_mode"),
        "paper_run_median_img_s": paper.get("median_img_s_after_epoch_1"),
        "paper_run_median_other_time_s": paper.get("median_other_time_s"),
        "paper_wall_s": paper.get("wall_s") if paper.get("rc") == 0 else None,
        "paper_train_wall_time_s": paper.get("wall_time_s"),
        "target_paper_s": TARGETS["paper_s"],
        "study_wall_s": study.get("wall_s") if study.get("finished") else None,
        "target_study_s": TARGETS["study_s"],
        "other_variants_img_s": {n: c.get("median_img_s") for key in ("eager", "compiled")
                                 for n, c in ((st.get(key) or {}).get("result") or {}).items()
                                 if n != "ours"},
    }


if __name__ == "__main__":
    sys.exit(main())
