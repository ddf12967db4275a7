"""A study refuses, before training and before touching study.json, runs trained on other
data or in another environment than the ones it holds (issue 20)."""

from __future__ import annotations

import json

import pytest

from cifarlens._io import write_json
from cifarlens.data.load import load_dataset
from cifarlens.data.synth import write_synthetic
from cifarlens.errors import CifarlensError
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.guard import planned_environment
from cifarlens.study.plan import plan_study
from cifarlens.study.run import run_study
from cifarlens.training.config import make_config


@pytest.fixture
def two_datasets(tmp_path):
    roots = []
    for seed in (0, 1):
        root = tmp_path / f"data{seed}"
        write_synthetic(root, "cifar100", train_per_class=4, test_per_class=2, seed=seed)
        roots.append(root)
    return roots


def _study_with_baseline(tmp_path, data_dir, env=None):
    """A study folder whose baseline run was started on `data_dir` (its recorded config)."""
    out = tmp_path / "study"
    overrides = {"data_dir": str(data_dir), "device": "cpu", "precision": "fp32"}
    plan, _ = plan_study("smoke", "augment=cutout", 1, overrides)
    write_json(out / "study.json", plan)
    cfg = make_config("smoke", **overrides)
    data = load_dataset("cifar100", data_dir, progress=False)
    run = out / "runs" / "baseline-s0"
    write_json(run / "config.json", {
        "config": plan["baseline"], "model": cfg.model, "dataset": "cifar100",
        "num_classes": data.num_classes, "class_names": data.class_names,
        "data_identity": data.identity, "seed": 0,
        "environment": env or planned_environment(cfg)})
    return out, overrides


def test_other_data_dir_is_refused_before_training(tmp_path, two_datasets):
    out, overrides = _study_with_baseline(tmp_path, two_datasets[0])
    before = (out / "study.json").read_text()
    with pytest.raises(CifarlensError, match="trained on other data"):
        run_study(out, preset="smoke", seeds=1, changes="label_smoothing=0",
                  overrides={**overrides, "data_dir": str(two_datasets[1])}, engine=LocalEngine(progress=False),
                  log=lambda m: None)
    assert (out / "study.json").read_text() == before  # the refused change is not recorded
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["baseline-s0"]  # nothing trained


def test_other_precision_is_refused_before_training(tmp_path, two_datasets):
    cfg = make_config("smoke", device="cpu", precision="fp32")
    env = {**planned_environment(cfg), "precision": "bf16"}
    out, overrides = _study_with_baseline(tmp_path, two_datasets[0], env)
    before = (out / "study.json").read_text()
    with pytest.raises(CifarlensError, match="precision 'bf16' vs 'fp32'"):
        run_study(out, preset="smoke", seeds=1, changes="label_smoothing=0",
                  overrides=overrides, engine=LocalEngine(progress=False), log=lambda m: None)
    assert (out / "study.json").read_text() == before
    assert "label_smoothing" not in json.dumps(json.loads(before)["changes"])
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["baseline-s0"]


def test_val_fraction_leaving_no_training_images_writes_nothing(tmp_path, two_datasets):
    out = tmp_path / "new"
    with pytest.raises(CifarlensError, match="leaves no training images"):
        run_study(out, preset="smoke", seeds=1, changes="label_smoothing=0", engine=LocalEngine(progress=False),
                  overrides={"data_dir": str(two_datasets[0]), "device": "cpu",
                             "val_fraction": 0.999}, log=lambda m: None)
    assert not out.exists()
