"""bench/gpu_suite.py's Ray case (--plan c, for a multi-GPU loan), dry-run on the CPU as the
device would run it: `cifarlens study --engine ray` through the CLI, on a Ray instance of the
study's own inside a loopback-only network namespace, and the 3-seed study's projection from
the per-run time it measured."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from netns import child_env

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("ray", reason='Ray is not installed: pip install "cifarlens[ray]"')


@pytest.mark.slow  # starts Ray and trains two runs
def test_plan_c_dry_run_runs_the_study_on_ray_and_projects_it(netns, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("g")  # short: Ray's socket paths under $TMPDIR
    block = tmp / "block" / "platformdirs"  # as on the device machine
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('not on the device machine')\n")
    env = child_env(tmp)
    env.pop("CIFARLENS_DATA", None)
    # the CLI's own Ray instance makes its temp folder in $TMPDIR: a short one (pytest's
    # folders are too long a path for Ray's sockets), removed below
    short = Path(tempfile.mkdtemp(prefix="clt-", dir="/tmp"))
    env.update(PYTHONPATH=str(block.parent), TMPDIR=str(short))
    out, work = tmp / "out", tmp / "work"
    inner = (f"ip link set lo up && exec {sys.executable} bench/gpu_suite.py --plan c "
             f"--dry-run --out {out} --work {work}")
    try:
        p = subprocess.run(["unshare", "-n", "sh", "-c", inner], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert not list(short.glob("clray-*"))  # the engine removed its temp folder
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(x.name for x in out.iterdir()) == ["gpu_suite.json", "gpu_suite.tar.gz"]
    r = json.loads((out / "gpu_suite.json").read_text())
    assert r["plan"] == "c" and set(r["stages"]) == {"data", "ray"}
    ray = r["stages"]["ray"]
    assert (ray["rc"], ray["engine"], ray["gpus"], ray["seeds"], ray["finished"]) == \
        (0, "ray", 0, 1, True)
    assert "--engine ray" in " ".join(ray["cmd"])
    assert sorted(ray["runs"]) == ["baseline-s0", "variant-s0"]
    assert all(x["device"] == "cpu" and x["gpu"] is None for x in ray["runs"].values())
    per_run = sorted(x["train_s"] + x["analysis_s"] for x in ray["runs"].values())
    assert ray["per_run_s"] == pytest.approx(sum(per_run) / 2, abs=0.06)  # the median of 2
    proj = ray["projected_3_seed_study_s"]
    t, fixed = ray["per_run_s"], ray["fixed_s"]
    assert proj == {"1": pytest.approx(fixed + 6 * t, abs=0.051),
                    "2": pytest.approx(fixed + 3 * t, abs=0.051),
                    "6": pytest.approx(fixed + t, abs=0.051)}
    assert fixed == pytest.approx(max(0.0, ray["wall_s"] - 2 * t), abs=0.051)  # 2 runs, 1 "GPU"
    assert r["summary"]["ray_projected_3_seed_study_s"] == proj
