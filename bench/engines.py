#!/usr/bin/env python
"""Study engines on this machine (issue 21): what Ray's start costs, and the wall time of a
4-run smoke study (2 arms x 2 seeds, the smoke preset on generated CIFAR-100, 1 thread per run)
run four ways, each in a fresh process and timed from its start to its end:

- local:      the runs one after another in one process (the local engine);
- processes:  a spawned process per run, 2 at a time (what --jobs 2 does);
- ray:        RayEngine on an instance of its own with 2 CPUs (start and stop included);
- slurm-local: SlurmEngine through submitit's local executor (every job at once).

Every run's test logits are compared with the local engine's: all must be equal bit for bit.
The runs' `execute` is the engine tests' (tests/study/engine_jobs.py: train with resume, then
evaluate). Ray binds every interface, so run it in a loopback-only network namespace:

  unshare -n sh -c 'ip link set lo up && OMP_NUM_THREADS=1 PYTHONPATH=src:tests/study \\
      .venv/bin/python bench/engines.py --rounds 2 --json bench/results/engines_cpu.json'
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
from _common import loadavg, machine_info, median, say, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "study"
JOBS = ("import engine_jobs as E, sys; "
        "jobs = E.study_jobs(sys.argv[1], sys.argv[2], epochs=None, dataset='cifar100'); ")
MODES = {
    "local": JOBS + "E.run_sequentially(jobs)",
    "processes": JOBS + (
        "import multiprocessing as mp; "
        "ctx = mp.get_context('spawn'); "
        "pool = ctx.Pool(2, maxtasksperchild=1); "
        "pool.starmap(E.execute, [(j, print) for j in jobs], chunksize=1); pool.close()"),
    "ray": JOBS + (
        "from cifarlens.study.engines.ray import RayEngine; "
        "RayEngine(fn=E.execute, num_cpus=2).run(jobs, lambda o: None)"),
    "slurm-local": JOBS + (
        "from cifarlens.study.engines.slurm import SlurmEngine; "
        "e = SlurmEngine(gpus_per_run=0, time='60', folder=sys.argv[1] + '/logs', "
        "cluster='local', fn=E.execute); e.poll_s = 0.5; e.run(jobs, lambda o: None)"),
}
START = """
import time, sys
t0 = time.perf_counter()
from cifarlens.study.engines.ray import RayEngine, import_ray
ray = import_ray()
t1 = time.perf_counter()
engine = RayEngine(fn=None, num_cpus=2)
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
    e.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(HELPERS)]), OMP_NUM_THREADS="1")
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


def one_study(mode: str, study: Path, data: Path) -> tuple[dict, dict[str, np.ndarray]]:
    shutil.rmtree(study, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MODES[mode], str(study), str(data)],
                          capture_output=True, text=True, env=env(), timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{mode} failed: {proc.stderr[-3000:]}")
    sys.path.insert(0, str(HELPERS))
    import engine_jobs as E

    logits = {p.name: E.logits_of(p) for p in sorted((study / "runs").iterdir())}
    say(f"{mode:11}: {wall:.1f} s")
    return {"mode": mode, "wall_s": wall, "load": loadavg()}, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", help="write the rows and the machine here")
    a = ap.parse_args()
    modes = a.modes.split(",")
    rows, starts = [], []
    with tempfile.TemporaryDirectory() as d:
        from cifarlens.synth import write_synthetic

        data = Path(d) / "data"
        write_synthetic(data, "cifar100", seed=0)  # 50 train / 10 test images per class
        reference = None
        for r in range(a.rounds):
            starts.append({"round": r, **ray_start()})
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                row, logits = one_study(mode, Path(d) / f"study-{mode}", data)
                reference = reference or logits
                row["equal_to_first"] = all(np.array_equal(logits[k], reference[k])
                                            for k in reference) and logits.keys() == reference.keys()
                rows.append({"round": r, **row})
    summary = {m: median([x["wall_s"] for x in rows if x["mode"] == m]) for m in modes}
    start = {k: median([s[k] for s in starts]) for k in starts[0] if k.endswith("_s")}
    for m, s in summary.items():
        say(f"{m}: median {s:.1f} s over {a.rounds} rounds")
    assert all(x["equal_to_first"] for x in rows), "an engine's logits differ"
    if a.json:
        write_json(a.json, {"rows": rows, "ray_start": starts, "median_wall_s": summary,
                            "median_ray_start_s": start, "machine": machine_info()})


if __name__ == "__main__":
    main()
