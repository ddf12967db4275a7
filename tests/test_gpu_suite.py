"""bench/gpu_suite.py as the lent GPU machine will run it, checked on the CPU (--dry-run).

The device's python3 has torch and every cifarlens dependency but platformdirs, runs a command
for at most 600 s and brings back at most 8 files (16 MiB each, at most 2 folders deep). The two
documented device commands (--plan a, --plan b) run here in dry-run form, with platformdirs made
unimportable, and must leave exactly gpu_suite.json and gpu_suite.tar.gz in --out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_suite

    return gpu_suite


def _no_platformdirs(tmp_path: Path) -> Path:
    block = tmp_path / "block" / "platformdirs"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('not on the device machine')\n")
    return block.parent


@pytest.mark.slow
@pytest.mark.parametrize("plan, stages", [("a", {"data", "eager", "paper", "eval", "roofline"}),
                                          ("b", {"data", "study", "compiled"})])
def test_documented_device_commands_pass_their_dry_run(plan, stages, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("CIFARLENS_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(_no_platformdirs(tmp_path)), OMP_NUM_THREADS="1")
    # the device runs it from the repository root with its own python3, src/ not installed
    p = subprocess.run([sys.executable, "bench/gpu_suite.py", "--plan", plan, "--dry-run",
                        "--out", str(out), "--work", str(work)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    files = sorted(x.name for x in out.rglob("*"))
    assert files == ["gpu_suite.json", "gpu_suite.tar.gz"]  # within the device's 8 files
    assert all(x.stat().st_size < 16 * 2**20 for x in out.iterdir())
    r = json.loads((out / "gpu_suite.json").read_text())
    assert r["dry_run"] and r["plan"] == plan and r["missing_modules"] == []
    assert set(r["stages"]) == stages
    for name, st in r["stages"].items():
        assert st.get("rc") == 0, (name, st)
    with tarfile.open(out / "gpu_suite.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"gpu_suite/{s}.log" for s in stages} <= names
    summ = r["summary"]
    assert summ["training_step_mode"] == "eager"  # the CPU's; "graphs" on one GPU
    if plan == "a":
        paper = r["stages"]["paper"]
        assert paper["epochs_done"] == 2 and paper["step_mode"] == "eager"
        assert len(paper["epoch_other_time"]) == 2 and paper["median_other_time_s"] >= 0
        assert summ["headline_contender_step_mode"] == "eager"
        assert summ["headline_train_img_s"] == r["stages"]["eager"]["result"]["ours"]["median_img_s"]
        assert "gpu_suite/paper-run/metrics.jsonl" in names
    else:
        assert r["stages"]["study"]["finished"] and summ["study_wall_s"] > 0
        assert len(r["stages"]["study"]["runs"]) == 2


def test_plans_fit_the_device_command_limit(suite):
    for stages, budget in suite.PLANS.values():
        assert set(stages) <= set(suite.STAGES)
        assert budget <= 570  # 600 s per command, minus start-up and the final archive
    assert suite.PLANS["a"][1] + suite.PLANS["b"][1] <= 700  # room to rerun one in 15 min


def test_headline_is_the_training_mode_not_the_best_variant(suite):
    st = {"eager": {"result": {"ours": {"median_img_s": 100.0, "step_mode": "graphs"},
                               "ours-eager": {"median_img_s": 90.0}}},
          "compiled": {"result": {"ours-compile": {"median_img_s": 500.0}}}}
    s = suite.summarize(st, "graphs")
    assert s["headline_train_img_s"] == 100.0 and s["headline_contender_step_mode"] == "graphs"
    assert s["other_variants_img_s"] == {"ours-eager": 90.0, "ours-compile": 500.0}


def test_a_run_cut_by_its_limit_keeps_its_epoch_rows(suite, smoke_run, tmp_path):
    import shutil

    run = tmp_path / "cut"
    shutil.copytree(smoke_run, run)
    (run / "done.json").unlink()  # as if killed at the stage's time limit
    r = suite.run_rows(run)
    assert r["epochs_done"] == 6 and len(r["epoch_train_time"]) == 6
    assert "wall_time_s" not in r and r["median_img_s_after_epoch_1"] > 0


def test_a_stage_over_its_limit_is_recorded_and_the_archive_kept(suite, tmp_path):
    s = suite.Suite(tmp_path / "out", tmp_path / "work", budget_s=60)
    s.out.mkdir()
    s.work.mkdir()
    r = s.run("slow", [sys.executable, "-c", "import time; print('started', flush=True); "
                       "time.sleep(30)"], limit_s=1.5, min_s=1)
    assert r["rc"] == "timeout" and "started" in (s.work / "slow.log").read_text()
    s.res["stages"]["slow"] = r
    s.save()
    with tarfile.open(s.out / "gpu_suite.tar.gz") as tar:
        assert "gpu_suite/slow.log" in tar.getnames()
    assert s.run("late", [sys.executable, "-c", "pass"], limit_s=100, min_s=100)["skipped"]


def test_work_folder_of_something_else_is_never_removed(suite, tmp_path):
    work = tmp_path / "precious"
    work.mkdir()
    (work / "thesis.tex").write_text("x")
    with pytest.raises(SystemExit):
        suite.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(work)])
    assert (work / "thesis.tex").exists()
