#!/usr/bin/env python
"""Study engines on this machine (issue 21): what Ray's start costs, and the wall time of a
4-run smoke study (2 arms x 2 seeds, the smoke preset on generated CIFAR-100, 1 thread per run)
produced four ways, each through `run_study` (train, evaluate, the first baseline's failures and
Grad-CAM, the summary; not the report, which is the same for every engine) in a fresh process,
timed from its start to its end:

- local:       LocalEngine: one run after another, each analysed beside the next one's training;
- processes:   ProcessesEngine(2): a spawned process per run, 2 at a time (--jobs 2);
- ray:         RayEngine on an instance of its own with 2 CPUs (start and stop included);
- slurm-local: SlurmEngine through submitit's local executor (every job at once).

Every run's test logits are compared with the first engine's: all must be equal bit for bit.
Ray binds every interface, so run it in a loopback-only network namespace:

  unshare -n sh -c 'ip link set lo up && OMP_NUM_THREADS=1 PYTHONPATH=src \\
      .venv/bin/python bench/engines.py --rounds 2 --json bench/results/engines_cpu.json'

`--project 60,120` prints (and writes) the expected wall time of a 3-seed paper study on 1, 2
and 6 GPUs for those per-run times (no run time measured on a GPU yet: see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    loadavg,
    machine_info,
    median,
    project_study_s,
    say,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
STUDY = """
import sys, torch
from cifarlens.study.run import run_study
out, data, mode = sys.argv[1:4]
if mode == "local":
    from cifarlens.study.engines.local import LocalEngine
    engine = LocalEngine(progress=False)
elif mode == "processes":
    from cifarlens.study.engines.processes import ProcessesEngine
    torch.set_num_threads(2)  # 2 processes with 1 thread each
    engine = ProcessesEngine(2, progress=False)
elif mode == "ray":
    from cifarlens.study.engines.ray import RayEngine
    engine = RayEngine(threads=1, num_cpus=2)
else:
    from cifarlens.study.engines.slurm import SlurmEngine
    engine = SlurmEngine(gpus_per_run=0, time="60", threads=1, cluster="local")
    engine.poll_s = 0.5
run_study(out, preset="smoke", changes="label_smoothing=0", seeds=2,
          overrides={"data_dir": data, "device": "cpu", "precision": "fp32"}, engine=engine,
          log=lambda m: print(m, file=sys.stderr, flush=True))
"""
MODES = ("local", "processes", "ray", "slurm-local")
START = """
import time
t0 = time.perf_counter()
from cifarlens.study.engines.ray import RayEngine, import_ray
ray = import_ray()
t1 = time.perf_counter()
engine = RayEngine(num_cpus=2)
with engine._session(ray):
    t2 = time.perf_counter()
    ray.get(ray.remote(lambda: 1).remote())
    t3 = time.perf_counter()
    ray.get(ray.remote(lambda: 2).remote())
    t4 = time.perf_counter()
t5 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    return e


def ray_start() -> dict:
    out = subprocess.run([sys.executable, "-c", START], capture_output=True, text=True,
                         env=env(), timeout=300)
    if out.returncode:
        raise SystemExit(f"Ray start failed: {out.stderr[-2000:]}")
    keys = ("import_s", "init_s", "first_task_s", "second_task_s", "shutdown_s")
    row = dict(zip(keys, map(float, out.stdout.split()[-5:]), strict=True))
    say("Ray: import {import_s:.2f} s, init {init_s:.2f} s, first task {first_task_s:.2f} s, "
        "next task {second_task_s:.3f} s, shutdown {shutdown_s:.2f} s".format(**row))
    return {**row, "load": loadavg()}


def logits_of(run: Path) -> np.ndarray:
    with np.load(run / "predictions_test.npz", allow_pickle=False) as z:
        return z["logits"].copy()


def one_study(mode: str, study: Path, data: Path) -> tuple[dict, dict[str, np.ndarray]]:
    shutil.rmtree(study, ignore_errors=True)
    load = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", STUDY, str(study), str(data), mode],
                          capture_output=True, text=True, env=env(), timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{mode} failed: {proc.stderr[-3000:]}")
    logits = {p.name: logits_of(p) for p in sorted((study / "runs").iterdir())}
    say(f"{mode:11}: {wall:.1f} s (load {load} -> {loadavg()})")
    return {"mode": mode, "wall_s": wall, "load_before": load, "load": loadavg()}, logits


def projection(per_run: list[float], start_s: float) -> dict:
    """The 3-seed paper study (6 runs) on 1, 2 and 6 GPUs, one run per GPU, for each assumed
    per-run time; `start_s` (Ray's start) counts once. The driver's summary and report after
    the runs are not included (unmeasured on a GPU; the same for every GPU count)."""
    rows = {str(t): {str(g): project_study_s(t, g, runs=6, fixed_s=start_s) for g in (1, 2, 6)}
            for t in per_run}
    for t, by_gpus in rows.items():
        say(f"paper study, {t} s per run: " + ", ".join(
            f"{g} GPU(s) {s / 60:.1f} min" for g, s in by_gpus.items()))
    return {"assumed_per_run_s": per_run, "start_s": start_s, "wall_s": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--project", default="60,120",
                    help="assumed per-run times (s) of a paper run on one GPU, comma-separated")
    ap.add_argument("--json", help="write the rows and the machine here")
    a = ap.parse_args()
    modes = a.modes.split(",")
    rows, starts = [], []
    with tempfile.TemporaryDirectory(prefix="engines-", dir="/tmp") as d:
        from cifarlens.data.synth import write_synthetic

        data = Path(d) / "data"
        write_synthetic(data, "cifar100", seed=0)  # 50 train / 10 test images per class
        reference = None
        for r in range(a.rounds):
            if "ray" in modes:
                starts.append({"round": r, **ray_start()})
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                row, logits = one_study(mode, Path(d) / f"study-{mode}", data)
                reference = reference or logits
                row["equal_to_first"] = logits.keys() == reference.keys() and all(
                    np.array_equal(logits[k], reference[k]) for k in reference)
                rows.append({"round": r, **row})
    summary = {m: median([x["wall_s"] for x in rows if x["mode"] == m]) for m in modes}
    start = {k: median([s[k] for s in starts]) for k in starts[0] if k.endswith("_s")} \
        if starts else {}
    for m, s in summary.items():
        say(f"{m}: median {s:.1f} s over {a.rounds} rounds")
    assert all(x["equal_to_first"] for x in rows), "an engine's logits differ"
    ray_cost = sum(start.get(k, 0.0) for k in ("import_s", "init_s", "shutdown_s"))
    proj = projection([float(x) for x in a.project.split(",")], round(ray_cost, 1))
    write_json(a.json, {"rows": rows, "ray_start": starts, "median_wall_s": summary,
                        "median_ray_start_s": start, "projection": proj,
                        "machine": machine_info()})


if __name__ == "__main__":
    main()
