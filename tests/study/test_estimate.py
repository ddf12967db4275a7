"""The plan line a study prints before it trains: runs x epochs x images, device, time."""

import re

import numpy as np
import pytest

from cifarlens._console import fmt_duration
from cifarlens.study.estimate import Plan, duration_s, plan_line, recorded_rate, train_images
from cifarlens.study.run import run_study


def test_duration_is_runs_times_epochs_times_images_over_rate():
    plan = Plan(runs=6, arms=2, seeds=3, epochs=50, images=40_000, device="cpu",
                precision="bf16", threads=2)
    assert duration_s(plan, 184.0) == pytest.approx(6 * 50 * 40_000 / 184.0)
    line = plan_line(plan, 184.0, "measured")
    assert line == ("plan: 6 runs to train (2 arms x 3 seeds), 50 epochs x 40,000 images each, "
                    "on cpu (bf16, 2 threads); measured 184 img/s -> about 18.1 h")
    assert fmt_duration(30) == "30 s" and fmt_duration(600) == "10 min" and fmt_duration(7200) == "2.0 h"
    # nothing left to train: no estimate
    assert "img/s" not in plan_line(Plan(0, 2, 3, 50, 40_000, "cpu", "fp32", 1), 184.0, "measured")


def test_train_images_counts_full_batches_of_the_split():
    labels = np.repeat(np.arange(10), 100)  # 1000 images, 20% val -> 800 train
    assert train_images(labels, 0.2, 0, None, 128) == 768  # 6 full batches
    assert train_images(labels, 0.2, 0, 300, 100) == 300


def test_recorded_rate_reads_a_finished_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "done.json").write_text('{"epochs": 5, "wall_time_s": 10.0}')
    assert recorded_rate([tmp_path / "missing", tmp_path / "r"], 400) == pytest.approx(200.0)


def test_study_says_its_plan_before_training(tmp_path, synth100, monkeypatch):
    def stop(*a, **k):
        raise RuntimeError("stop before training")

    class Stop:
        name = "stop"
        run = staticmethod(stop)

    lines: list[str] = []
    with pytest.raises(RuntimeError, match="stop before training"):
        run_study(tmp_path / "s", preset="smoke", seeds=2, log=lines.append,
                  overrides={"data_dir": str(synth100), "device": "cpu"}, engine=Stop())
    plan = [ln for ln in lines if ln.startswith("plan:")]
    assert len(plan) == 1, lines
    assert re.fullmatch(r"plan: 4 runs to train \(2 arms x 2 seeds\), \d+ epochs x [\d,]+ images "
                        r"each, on cpu \((bf16|fp32), \d+ threads?\); measured [\d,]+ img/s -> "
                        r"about .+", plan[0]), plan[0]
