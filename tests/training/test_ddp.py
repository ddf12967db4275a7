"""Data-parallel training under torchrun (2 processes, gloo on the CPU) on generated data.

One run is started with `torchrun --nproc_per_node 2`, stopped (SIGTERM to torchrun) after its
second epoch, and resumed with `--resume` under torchrun. It must leave ONE ordinary run folder
(only rank 0 writes), cover the whole training split each epoch with the global batch, and reach
an accuracy close to a single-process run of the same config.

Accuracy tolerance: both runs must be far above chance (> 0.15, chance is 0.01) and within 0.15 of
each other. The two runs are not the same computation: each rank normalizes with BatchNorm
statistics of its own 32-image half-batch (no SyncBN), sees its own fixed shard, and draws its
own dropout masks, so they follow different trajectories. On 400 validation images the binomial
standard error of one accuracy near 0.4 is ~0.025, and seed-to-seed spread of this 6-epoch smoke
run is of the same order, so the difference has a standard deviation of roughly 0.05: 0.15 is about
3 sigma. A DDP bug that breaks learning (unsynchronized or doubly-scaled gradients, a rank
training on the wrong labels) shows up as far larger gaps or as a failure of the chance check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available()
                                 or not torch.distributed.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]

EPOCHS = 6  # the smoke preset
TRAIN_IMAGES = 1600  # 20 per class x 100 classes, minus the 20% validation split
TOL = 0.15
FLOOR = 0.15


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # one thread per rank: 2 ranks fill the 2 cores
    return env


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "cifarlens", "train",
            "--data-dir", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(out),
            "--no-progress", *extra]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from cifarlens.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("ddp-data")
    write_synthetic(root, "cifar100", train_per_class=20, test_per_class=2, seed=0)
    return root


@pytest.fixture(scope="module")
def single_run(data, tmp_path_factory) -> dict:
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    cfg = make_config("smoke", data_dir=str(data), device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 on a busy 2-core box; does not change what is tested
    try:
        return train(cfg, tmp_path_factory.mktemp("single") / "run", progress=False,
                     log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


def test_torchrun_trains_stops_and_resumes_into_one_run_folder(data, single_run, tmp_path):
    out = tmp_path / "run"

    # 1. Start under torchrun; stop it once epoch 2's checkpoint is complete.
    proc = subprocess.Popen(_cmd(data, out), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marker = out / "checkpoints" / "ckpt-e0002.pt.sha256"
    deadline = time.monotonic() + 180

    def epoch_two_written() -> bool:
        # the checkpoint's checksum comes first and metrics.jsonl after it (train.write_epoch):
        # on a busy machine a stop between the two left one row (issue 20)
        rows = out / "metrics.jsonl"
        return marker.exists() and rows.exists() and len(rows.read_text().splitlines()) >= 2

    try:
        while not epoch_two_written():
            if proc.poll() is not None:
                pytest.fail(f"torchrun exited early (rc {proc.returncode}):\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no epoch-2 checkpoint after 180 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
        log1, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, f"the run was not stopped:\n{log1}"
    assert not (out / "done.json").exists(), "the run finished before it could be stopped"
    first = _rows(out)
    assert 2 <= len(first) < EPOCHS

    # 2. Resume under torchrun.
    t0 = time.monotonic()
    res = subprocess.run(_cmd(data, out, "--resume"), env=_env(), capture_output=True, text=True,
                         timeout=240)
    log2 = res.stdout + res.stderr
    assert res.returncode == 0, log2
    assert f"resuming {out} after epoch" in log2
    assert "2 processes" in log2
    print(f"resumed part took {time.monotonic() - t0:.1f} s")

    # 3. One ordinary run folder, written by rank 0 only.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "split.npz", "norm.json", "metrics.jsonl", "metrics.csv",
            "done.json", "checkpoints"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n == ".lock"], names
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "best.pt.sha256", "ckpt-e0005.pt", "ckpt-e0005.pt.sha256",
                     "ckpt-e0006.pt", "ckpt-e0006.pt.sha256"], ckpts
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["world_size"] == 2

    # 4. Every epoch once, in order; the resumed run kept the epochs before the stop.
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert rows[:2] == first[:2]
    for r in rows:  # the global batch covered the whole training split (25 steps x 64)
        assert r["images_per_s"] * r["train_time"] == pytest.approx(TRAIN_IMAGES, rel=1e-6)

    # 5. It learned, about as well as one process with the same config.
    from cifarlens.runs import load_model

    done = json.loads((out / "done.json").read_text())
    assert done["finished"] and done["epochs"] == EPOCHS
    acc_ddp, acc_one = done["best_val_acc"], single_run["best_val_acc"]
    print(f"val acc: 2 processes {acc_ddp:.3f}, 1 process {acc_one:.3f}")
    assert acc_ddp > FLOOR and acc_one > FLOOR
    assert abs(acc_ddp - acc_one) <= TOL
    model, _ = load_model(out, "best")  # rank 0's checkpoint loads as a plain (non-DDP) model
    assert not any(k.startswith("module.") for k in model.state_dict())
