"""runs.Run, the one owner of a run folder: its layout, its checks and its cache (issue 9).

Built on hand-made run folders (no training): the files a stage writes are faked with the
shapes the real ones have.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifarlens.errors import CifarlensError
from cifarlens.runs import Run

SHA = "a" * 64


def _run(tmp_path, sha=SHA):
    path = tmp_path / "run"
    (path / "checkpoints").mkdir(parents=True)
    (path / Run.CONFIG).write_text(json.dumps({
        "config": {}, "model": "small", "dataset": "cifar10", "num_classes": 3,
        "class_names": ["a", "b", "c"]}))
    (path / Run.NORM).write_text(json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}))
    (path / "checkpoints" / "best.pt.sha256").write_text(sha + "\n")
    return Run(path)


def _predictions(n=4, sha=SHA):
    logits = np.eye(3, dtype=np.float32)[np.arange(n) % 3] * 5
    return {"indices": np.arange(n), "labels": np.arange(n) % 3, "logits": logits,
            "pred": np.arange(n) % 3, "confidence": np.full(n, 0.9, np.float32),
            "checkpoint": np.array("best"), "checkpoint_sha256": np.array(sha)}


def test_every_file_name_comes_from_the_layout():
    assert Run.predictions_name("val") == "predictions_val.npz"
    assert Run.predictions_name("test", "csv") == "predictions_test.csv"
    assert Run.metrics_name("test") == "metrics_test.json"
    assert Run.failures_name("test") == "failures_test.json"
    assert Run.explanations_name("test") == "explanations_test.npz"
    assert Run.explanations_name("test", "top6") == "explanations_test_top6.npz"
    assert Run.figure_name("gradcam_test") == "figures/gradcam_test.png"


def test_open_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CifarlensError, match="is not a cifarlens run \\(no config.json\\)"):
        Run.open(tmp_path)
    run = _run(tmp_path)
    assert Run.open(run) is run  # a Run passes through with its cache
    assert Run.open(run.path).path == run.path


def test_predictions_are_checked_and_current_only_for_the_best_checkpoint(tmp_path):
    run = _run(tmp_path)
    assert run.current("predictions", "test") is None
    with pytest.raises(CifarlensError, match="run `cifarlens evaluate"):
        run.predictions("test")
    run.write_predictions("test", _predictions(), "csv\n")
    assert (run.path / "predictions_test.csv").read_text() == "csv\n"
    assert Run(run.path).current("predictions", "test") is not None  # from disk, not the cache
    (run.path / "checkpoints" / "best.pt.sha256").write_text("b" * 64 + "\n")
    fresh = Run(run.path)
    assert fresh.current("predictions", "test") is None
    with pytest.raises(CifarlensError, match="another checkpoint than its best.pt"):
        fresh.require_current("predictions", "test")
    bad = _predictions()
    bad["pred"] = np.array([0, 1, 7, 0])  # a class the logits do not have
    run.write_predictions("val", bad, "")
    with pytest.raises(CifarlensError, match="inconsistent shapes or class indices"):
        Run(run.path).predictions("val")


def test_json_outputs_count_as_current_only_when_made_from_best(tmp_path):
    run = _run(tmp_path)
    assert run.current("failures", "test") is None and run.temperature("test") is None
    run.write_failures("test", {"checkpoint_sha256": SHA, "failures": []})
    assert Run(run.path).current("failures", "test") == {"checkpoint_sha256": SHA, "failures": []}
    run.write_failures("test", {"checkpoint_sha256": "c" * 64, "failures": []})
    assert Run(run.path).current("failures", "test") is None
    run.write_metrics("test", {"checkpoint_sha256": SHA, "temperature_scaling": {"temperature": 0.5}})
    assert Run(run.path).temperature("test") == 0.5
    assert Run(run.path).current("metrics", "test") is None  # no predictions


def test_record_keeps_every_stage_entry(tmp_path):
    run = _run(tmp_path)
    run.record("evaluate_test", {"n": 1})
    run.record("failures_test", {"n": 2})
    Run(run.path).record("evaluate_test", {"n": 3})  # another process's Run
    assert json.loads((run.path / Run.ANALYSIS).read_text()) == {
        "evaluate_test": {"n": 3}, "failures_test": {"n": 2}}


def test_explanation_is_current_only_with_its_npz_and_checkpoint(tmp_path):
    run = _run(tmp_path)
    run.record("explain_test", {"checkpoint_sha256": SHA, "file": "explanations_test.npz"})
    assert Run(run.path).current("explanation", "test") is None  # no npz
    assert run.write_explanations("test", "", {"positions": np.arange(2)}) == \
        "explanations_test.npz"
    assert Run(run.path).current("explanation", "test")["file"] == "explanations_test.npz"
    assert Run(run.path).current("explanation", "test", "top6") is None


def test_normalize_uses_the_runs_own_statistics(tmp_path):
    run = _run(tmp_path)
    x = np.full((1, 3, 2, 2), 255, np.uint8)
    np.testing.assert_allclose(run.normalize(x).numpy(), (1.0 - 0.5) / 0.25)
    with pytest.raises(CifarlensError, match="unknown split 'dev'"):
        run.split_arrays("dev", data=object())


def test_the_data_is_read_once_per_run(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cifarlens.data.load as D

    calls = []
    fake = SimpleNamespace(test_x=np.zeros((2, 3, 2, 2), np.uint8), test_y=np.array([0, 1]),
                           train_y=np.zeros(5, np.int64))
    monkeypatch.setattr(D, "load_dataset", lambda *a, **k: calls.append(a) or fake)
    run = _run(tmp_path)
    assert run.data() is fake and run.data() is fake
    x, y, idx = run.split_arrays("test")
    assert len(calls) == 1 and idx.tolist() == [0, 1]
    Run(run.path).data()  # a new Run reads again (the process-wide cache is data.py's)
    assert len(calls) == 2


def test_the_study_folder_names_its_runs_and_files_in_one_place(tmp_path):
    from cifarlens.study.folder import StudyFolder

    s = StudyFolder(tmp_path / "study")
    assert s.run("baseline", 2).path == tmp_path / "study" / "runs" / "baseline-s2"
    assert s.file(s.SUMMARY) == tmp_path / "study" / "summary.json"
    # a summary written elsewhere names its runs by a path that moved: only the name counts
    assert s.run_by_name("/old/place/runs/variant-s0") == tmp_path / "study" / "runs" / "variant-s0"
