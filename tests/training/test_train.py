import json

import numpy as np
import pytest
import torch

from cifarlens.cli import build_parser, main
from cifarlens.errors import CifarlensError
from cifarlens.runs import epoch_checkpoints, load_checkpoint, load_model, load_split
from cifarlens.training.config import TrainConfig, make_config
from cifarlens.training.loop import lr_factor, train
from cifarlens.training.runtime import infer_logits


def test_smoke_training_learns(smoke_run):
    done = json.loads((smoke_run / "done.json").read_text())
    assert done["finished"] and done["best_val_acc"] > 0.30  # chance is 0.01
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "images_per_s"):
        assert k in rows[0]


def test_run_folder_records_everything(smoke_run):
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["config"]["model"] == "small"
    env = cfg["environment"]
    assert env["torch"] == torch.__version__ and env["precision"] in ("bf16", "fp32")
    assert "git_commit" in env and env["device"] == "cpu"
    assert (smoke_run / "metrics.csv").read_text().startswith("epoch,")
    assert (smoke_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    norm = json.loads((smoke_run / "norm.json").read_text())
    assert len(norm["mean"]) == 3 and all(0 < s < 1 for s in norm["std"])
    split = np.load(smoke_run / "split.npz")
    assert len(np.intersect1d(split["train"], split["val"])) == 0
    assert len(split["val"]) == 1000  # 20% of 5000, stratified
    assert len(epoch_checkpoints(smoke_run)) == 2  # newest two kept


def test_load_model_reproduces_recorded_val_accuracy(smoke_run):
    model, cfg = load_model(smoke_run, "best")
    assert not model.training
    x, y, idx = load_split(smoke_run, "val")
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 0.5
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    best = json.loads((smoke_run / "done.json").read_text())["best_val_acc"]
    assert abs(acc - best) < 0.02  # recorded under bf16 autocast, recomputed in fp32
    last, _ = load_model(smoke_run, "last")
    assert sum(p.numel() for p in last.parameters()) == sum(p.numel() for p in model.parameters())


def _cfg(data, **kw):
    base = dict(data_dir=str(data), device="cpu", epochs=3, batch_size=50, train_limit=400,
                precision="fp32")
    base.update(kw)
    return make_config("smoke", **base)


def test_resume_equals_uninterrupted_run(synth10, tmp_path):
    cfg = _cfg(synth10, dataset="cifar10")
    full = train(cfg, tmp_path / "full", progress=False, log=lambda m: None)

    def stop_after_epoch_2(msg):
        if msg.startswith("epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", progress=False, log=stop_after_epoch_2)
    assert not (tmp_path / "part" / "done.json").exists()
    assert not (tmp_path / "part" / ".lock").exists()  # lock released on Ctrl-C
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False, log=lambda m: None)
    a = load_checkpoint(epoch_checkpoints(tmp_path / "full")[0])
    b = load_checkpoint(epoch_checkpoints(tmp_path / "part")[0])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert full["best_val_acc"] == resumed["best_val_acc"]


def test_same_seed_same_numbers_other_seed_differs(synth10, tmp_path):
    cfg = _cfg(synth10, dataset="cifar10", epochs=1)
    r1 = train(cfg, tmp_path / "a", progress=False, log=lambda m: None)
    r2 = train(cfg, tmp_path / "b", progress=False, log=lambda m: None)
    r3 = train(_cfg(synth10, dataset="cifar10", epochs=1, seed=5), tmp_path / "c",
               progress=False, log=lambda m: None)
    assert r1["final"]["train_loss"] == r2["final"]["train_loss"]
    assert r1["final"]["train_loss"] != r3["final"]["train_loss"]


def test_existing_run_needs_resume_and_same_settings(synth10, tmp_path):
    cfg = _cfg(synth10, dataset="cifar10", epochs=1)
    train(cfg, tmp_path / "r", progress=False, log=lambda m: None)
    with pytest.raises(CifarlensError, match="--resume"):
        train(cfg, tmp_path / "r", progress=False, log=lambda m: None)
    other = _cfg(synth10, dataset="cifar10", epochs=1, lr=0.01)
    with pytest.raises(CifarlensError, match="lr: 0.05 -> 0.01"):
        train(other, tmp_path / "r", resume=True, progress=False, log=lambda m: None)


def test_divergence_stops_with_clear_error_and_keeps_good_checkpoint(synth10, tmp_path,
                                                                     monkeypatch):
    # Epoch 1 trains normally; in epoch 2 the learning rate explodes. The run must stop with
    # one clear line and keep epoch 1's checkpoint and best.pt, whole and resumable.
    import cifarlens.training.loop as T

    normal = lr_factor
    monkeypatch.setattr(T, "lr_factor", lambda s, total, warmup:
                        normal(s, total, warmup) if s < total // 2 else 1e12)
    out = tmp_path / "r"
    with pytest.raises(CifarlensError, match="diverged"):
        train(_cfg(synth10, dataset="cifar10", epochs=2), out, progress=False,
              log=lambda m: None)
    kept = epoch_checkpoints(out)
    assert [load_checkpoint(p)["epoch"] for p in kept] == [1]  # nothing non-finite saved
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())
    assert not (out / "done.json").exists()  # never taken for a finished run
    assert (out / "config.json").exists()  # what was asked for stays on record
    # diverging in the first epoch leaves no checkpoint at all
    monkeypatch.undo()
    with pytest.raises(CifarlensError, match="diverged"):
        train(_cfg(synth10, dataset="cifar10", epochs=1, lr=1e30), tmp_path / "bad",
              progress=False, log=lambda m: None)
    assert epoch_checkpoints(tmp_path / "bad") == []
    assert not (tmp_path / "bad" / "checkpoints" / "best.pt").exists()


def test_lr_schedule_warms_up_then_anneals_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_config_validation():
    with pytest.raises(CifarlensError, match="label-smoothing"):
        make_config("paper", label_smoothing=1.5)
    with pytest.raises(CifarlensError, match="choose from: paper, quick, smoke"):
        make_config("fast")
    paper = make_config("paper")
    assert (paper.epochs, paper.batch_size, paper.momentum, paper.label_smoothing) == (50, 128, 0.9, 0.1)
    assert isinstance(paper, TrainConfig)


def test_infer_logits_is_batch_size_independent():
    from cifarlens.training.models import build_model

    torch.manual_seed(0)
    m = build_model("small", 10)
    x = np.random.default_rng(0).integers(0, 256, (37, 3, 32, 32), dtype=np.uint8)
    a = infer_logits(m, x, [0.5] * 3, [0.25] * 3, device=torch.device("cpu"), batch_size=5)
    b = infer_logits(m, x, [0.5] * 3, [0.25] * 3, device=torch.device("cpu"), batch_size=100)
    assert a.shape == (37, 10) and torch.allclose(a, b, atol=1e-5)
    assert m.training  # restored


# --- per-epoch bookkeeping (issue 14): timings, background writes, curves when due ----------------


def test_rows_split_each_epoch_into_train_val_and_other_time(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["train_time"] > 0 and r["val_time"] > 0 and r["other_time"] >= 0
        assert r["epoch_time"] == pytest.approx(r["train_time"] + r["val_time"] + r["other_time"])
    done = json.loads((smoke_run / "done.json").read_text())
    assert done["final_write_s"] >= 0 and done["step_mode"] == "eager"
    assert done["val_precision"] in ("bf16", "fp32")
    header = (smoke_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_time", "val_time", "other_time"} <= set(header)


def test_background_writes_equal_synchronous_ones(synth10, tmp_path, monkeypatch):
    """The writer thread saves a copy taken at the epoch's end: training on meanwhile must not
    leak into it (a missing copy would save later weights), and best.pt is that epoch's copy."""
    from cifarlens.training import writer as T

    cfg = _cfg(synth10, dataset="cifar10")
    train(cfg, tmp_path / "bg", progress=False, log=lambda m: None)
    monkeypatch.setattr(T, "WRITE_IN_BACKGROUND", False)
    train(cfg, tmp_path / "sync", progress=False, log=lambda m: None)
    for name in ("ckpt-e0003.pt", "ckpt-e0002.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / r / "checkpoints" / name) for r in ("bg", "sync"))
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)
        if "optimizer" in a:
            for i, st in a["optimizer"]["state"].items():
                assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    best = load_checkpoint(tmp_path / "bg" / "checkpoints" / "best.pt")
    done = json.loads((tmp_path / "bg" / "done.json").read_text())
    assert best["epoch"] == done["best_epoch"] and best["val_acc"] == done["best_val_acc"]
    last = load_checkpoint(tmp_path / "bg" / "checkpoints" / f"ckpt-e{best['epoch']:04d}.pt") \
        if best["epoch"] >= 2 else None
    if last is not None:  # the best epoch's checkpoint is still kept: same weights
        for k in best["model"]:
            assert torch.equal(best["model"][k], last["model"][k])


def test_curves_are_drawn_when_due_and_at_the_end(synth10, tmp_path, monkeypatch):
    from cifarlens.training import loop as T
    from cifarlens.training import writer as W

    drawn = []
    monkeypatch.setattr(W, "plot_curves", lambda runs, path: drawn.append(len(runs[""])))
    monkeypatch.setattr(T, "PLOT_EVERY_S", 1e9)  # nobody looks twice within a run
    train(_cfg(synth10, dataset="cifar10", epochs=3), tmp_path / "r", progress=False,
          log=lambda m: None)
    assert drawn == [1, 3]  # the first epoch (something to look at) and the last
    drawn.clear()
    monkeypatch.setattr(T, "PLOT_EVERY_S", 0.0)
    train(_cfg(synth10, dataset="cifar10", epochs=3), tmp_path / "r2", progress=False,
          log=lambda m: None)
    assert drawn == [1, 2, 3]


def test_epoch_writer_runs_jobs_in_order_and_reports_the_first_error_once():
    import threading
    import time

    from cifarlens.training.writer import EpochWriter

    done, main = [], threading.get_ident()
    w = EpochWriter()
    for k in range(4):
        w.submit(lambda k=k: (time.sleep(0.01), done.append((k, threading.get_ident() != main))))
    w.flush()
    assert done == [(k, True) for k in range(4)]  # in order, off the calling thread

    def fail():
        raise CifarlensError("cannot write x: disk full")

    w.submit(fail)
    w.submit(lambda: done.append("after the failure"))  # skipped: must not overtake the lost one
    with pytest.raises(CifarlensError, match="disk full"):
        w.flush()
    w.flush()  # raised once
    w.close()
    assert "after the failure" not in done
    s = EpochWriter(background=False)  # the synchronous twin raises at once
    with pytest.raises(CifarlensError, match="disk full"):
        s.submit(fail)


def test_cpu_copy_is_frozen():
    from cifarlens.training.writer import cpu_copy

    t = torch.ones(3)
    state = {"a": t, "b": [t, {"c": t}], "n": 4}
    c = cpu_copy(state)
    t.add_(1)
    assert torch.equal(c["a"], torch.ones(3)) and torch.equal(c["b"][1]["c"], torch.ones(3))
    assert c["n"] == 4 and c["b"] is not state["b"]


def test_threads_option_sets_and_records_the_thread_count(synth10, tmp_path):

    before = torch.get_num_threads()
    try:
        rc = main(["train", "--data-dir", str(synth10), "--dataset", "cifar10", "--preset",
                       "smoke", "--device", "cpu", "--train-limit", "100", "--batch-size", "50",
                       "--epochs", "1", "--no-progress", "--threads", "1", "--out",
                       str(tmp_path / "r")])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    env = json.loads((tmp_path / "r" / "config.json").read_text())["environment"]
    assert env["threads"] == 1
    p = build_parser()
    for argv in (["evaluate", "RUN"], ["failures", "RUN"], ["explain", "RUN"], ["study"], ["demo"]):
        assert p.parse_args([*argv, "--threads", "2"]).threads == 2
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--out", "x", "--threads", "0"])


def test_metrics_csv_takes_rows_without_the_newer_timing_columns(tmp_path):
    # a run resumed from a checkpoint written before val_time/other_time existed
    from cifarlens.training.writer import write_history

    old = {"epoch": 1, "train_loss": 2.0, "epoch_time": 3.0}
    new = {"epoch": 2, "train_loss": 1.5, "epoch_time": 3.0, "val_time": 0.5, "other_time": 0.1}
    write_history(tmp_path, [old, new], plot=False)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,train_loss,epoch_time,val_time,other_time", "1,2.0,3.0,,",
                     "2,1.5,3.0,0.5,0.1"]
