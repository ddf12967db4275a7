"""Run folders: results name what they were computed from, and files a command reads are checked.

Issue 11, class 1 and 4: an `evaluate` run while a study trained the same run left metrics from
an early checkpoint behind a report; a run resumed or evaluated on other data went on without a
word; hand-edited, truncated or foreign run files crashed with tracebacks. Every case here is
built on a copy of the session's smoke run (tests/conftest.py).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlens._io import RunLock
from cifarlens.cli import build_parser, main
from cifarlens.errors import CifarlensError
from cifarlens.runs import (
    CKPT_DIR,
    Run,
    checkpoint_sha256,
    latest_good_checkpoint,
    load_model,
    load_split,
    load_split_indices,
    read_config,
    read_history,
    read_norm,
    save_checkpoint,
)
from cifarlens.stages.evaluate import predict


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- locks -------------------------------------------------------------------------------------


def _foreign_lock(folder: Path) -> None:
    """A lock held by a live process that is not this one (pid 1 always exists)."""
    (folder / ".lock").write_text(f"{socket.gethostname()} 1\n")


@pytest.mark.parametrize("command", ["evaluate", "failures", "explain"])
def test_every_command_writing_into_a_run_takes_its_lock(run_copy, capsys, command):
    _foreign_lock(run_copy)
    before = sorted(p.name for p in run_copy.iterdir())
    err = _one_line_error(capsys, [command, str(run_copy)])
    assert "is in use by" in err and " 1 " in err + " "
    assert sorted(p.name for p in run_copy.iterdir()) == before  # nothing written


def test_report_takes_the_study_lock(tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "summary.json").write_text("{}")
    _foreign_lock(study)
    assert "is in use by" in _one_line_error(capsys, ["report", str(study)])
    assert not (study / "report.html").exists()


def test_lock_is_reentrant_within_a_process_and_released_by_the_last_holder(tmp_path):
    outer = RunLock(tmp_path).acquire()
    inner = RunLock(tmp_path).acquire()  # a stage inside a study takes the same lock again
    inner.release()
    assert (tmp_path / ".lock").exists()
    outer.release()
    assert not (tmp_path / ".lock").exists()
    # and another process is still refused while it is held
    with RunLock(tmp_path):
        code = ("import sys; from cifarlens._io import RunLock\n"
                "from cifarlens.errors import CifarlensError\n"
                f"try: RunLock({str(tmp_path)!r}).acquire()\n"
                "except CifarlensError: sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 3, r.stderr


# --- results name their checkpoint and data ------------------------------------------------------


def _replace_best(run: Path) -> None:
    """Make best.pt another checkpoint (as a run still training would): perturbed weights."""
    model, cfg = load_model(run)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint({"model_name": cfg["model"], "num_classes": cfg["num_classes"],
                     "dataset": cfg["dataset"], "epoch": 1, "val_acc": 0.0, "model": state},
                    run / CKPT_DIR / "best.pt")


def test_predictions_record_the_checkpoint_and_stale_ones_are_refused(run_copy):
    predict(run_copy, ("test",), device="cpu")
    p = Run(run_copy).predictions("test")
    assert str(p["checkpoint_sha256"]) == checkpoint_sha256(run_copy)
    assert Run(run_copy).current("predictions", "test") is not None
    Run(run_copy).require_current("predictions", "test")
    _replace_best(run_copy)
    assert Run(run_copy).current("predictions", "test") is None
    with pytest.raises(CifarlensError, match="another checkpoint"):
        Run(run_copy).require_current("predictions", "test")


def test_run_records_its_data_identity_and_absolute_data_dir(smoke_run):
    cfg = read_config(smoke_run)
    ident = cfg["data_identity"]
    assert ident["dataset"] == "cifar100" and ident["source"] == "generated"
    assert set(ident["md5"]) == {"meta", "train", "test"}
    assert Path(cfg["data_dir"]).is_absolute()


def _other_data(tmp_path: Path) -> Path:
    from cifarlens.data.synth import write_synthetic

    root = tmp_path / "other"
    write_synthetic(root, "cifar100", train_per_class=5, test_per_class=2, seed=3)
    return root


def test_other_data_is_refused_by_evaluate_and_load_split(run_copy, tmp_path, capsys):
    other = _other_data(tmp_path)
    err = _one_line_error(capsys, ["evaluate", str(run_copy), "--data-dir", str(other)])
    assert "trained on other data" in err and "train" in err
    with pytest.raises(CifarlensError, match="trained on other data"):
        load_split(run_copy, "test", data_dir=str(other))
    with pytest.raises(CifarlensError, match="trained on other data"):
        Run(run_copy).data(str(other))


def test_resume_on_other_data_is_refused(run_copy, tmp_path, capsys):
    cfg = read_config(run_copy)
    (run_copy / "done.json").unlink()
    other = _other_data(tmp_path)
    err = _one_line_error(capsys, ["train", "--out", str(run_copy), "--resume", "--preset",
                                   "smoke", "--device", "cpu", "--data-dir", str(other),
                                   "--no-progress"])
    assert "trained on other data" in err
    assert read_config(run_copy) == cfg


# --- run files are checked against their schema --------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "config is a list": (lambda r: (r / "config.json").write_text("[]"), "not a valid run config"),
    "config without classes": (
        lambda r: (r / "config.json").write_text(json.dumps(
            {k: v for k, v in json.loads((r / "config.json").read_text()).items()
             if k != "class_names"})), "class_names"),
    "norm without std": (lambda r: (r / "norm.json").write_text('{"mean": [0.5, 0.5, 0.5]}'),
                         "norm.json is not valid"),
    "norm with zero std": (lambda r: (r / "norm.json").write_text(
        '{"mean": [0.5, 0.5, 0.5], "std": [0.2, 0, 0.2]}'), "norm.json is not valid"),
    "truncated split": (lambda r: _truncate(r / "split.npz"), "corrupt split file"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_damaged_run_files_are_one_line_errors(run_copy, capsys, name):
    damage, message = CORRUPTIONS[name]
    damage(run_copy)
    assert message in _one_line_error(capsys, ["evaluate", str(run_copy)])


def _write_split(run: Path, **arrays: np.ndarray) -> None:
    z = dict(np.load(run / "split.npz"))
    z.update(arrays)
    buf = io.BytesIO()
    np.savez(buf, **z)
    (run / "split.npz").write_bytes(buf.getvalue())


def test_split_with_overlap_or_out_of_range_indices_is_refused(run_copy):
    z = load_split_indices(run_copy)
    _write_split(run_copy, val=np.concatenate([z["val"][:-1], z["train"][:1]]))
    with pytest.raises(CifarlensError, match="overlap"):
        load_split_indices(run_copy)
    _write_split(run_copy, val=np.concatenate([z["val"], [10**6]]))
    with pytest.raises(CifarlensError, match="out of range"):
        load_split_indices(run_copy, 5000)
    with pytest.raises(CifarlensError, match="out of range"):
        load_split(run_copy, "val")


def test_truncated_or_inconsistent_predictions_are_refused(run_copy):
    predict(run_copy, ("test",), device="cpu")
    path = run_copy / "predictions_test.npz"
    good = path.read_bytes()
    _truncate(path)
    with pytest.raises(CifarlensError, match="corrupt predictions file"):
        Run(run_copy).predictions("test")
    path.write_bytes(good)
    z = dict(np.load(path))
    z["pred"] = z["pred"][:-1]
    np.savez(path.with_suffix(""), **z)  # writes predictions_test.npz again
    with pytest.raises(CifarlensError, match="inconsistent"):
        Run(run_copy).predictions("test")


def test_blank_lines_in_metrics_are_ignored_and_garbage_is_named(run_copy):
    path = run_copy / "metrics.jsonl"
    rows = read_history(run_copy)
    path.write_text("\n" + path.read_text().replace("\n", "\n\n"))
    assert read_history(run_copy) == rows
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(CifarlensError, match=r"metrics.jsonl line \d+ is not a metrics row"):
        read_history(run_copy)


@pytest.mark.parametrize("payload", [[1, 2, 3], torch.zeros(3), {"weights": {}}])
def test_best_checkpoint_that_is_not_a_state_dict_is_refused(run_copy, payload):
    save_checkpoint(payload, run_copy / CKPT_DIR / "best.pt")  # valid checksum, wrong content
    with pytest.raises(CifarlensError, match="not a cifarlens checkpoint|no model"):
        load_model(run_copy)


def test_best_copied_over_the_newest_resume_checkpoint_is_skipped(run_copy):
    from cifarlens.runs import epoch_checkpoints

    newest, older = epoch_checkpoints(run_copy)[:2]
    for suffix in ("", ".sha256"):
        shutil.copy(run_copy / CKPT_DIR / f"best.pt{suffix}", f"{newest}{suffix}")
    warnings: list[str] = []
    found = latest_good_checkpoint(run_copy, warn=warnings.append)
    assert found is not None and found[0] == older
    assert "not a cifarlens resume checkpoint" in warnings[0]


def test_read_norm_accepts_the_runs_own_file(smoke_run):
    norm = read_norm(smoke_run)
    assert len(norm["mean"]) == 3 and min(norm["std"]) > 0


# --- the Grad-CAM API speaks in one-line errors ---------------------------------------------------


@pytest.mark.parametrize("shape, targets, message", [
    ((2, 3, 16, 16), [0, 1], r"cannot take images of shape \(3, 16, 16\)"),
    ((2, 1, 32, 32), [0, 1], r"cannot take images of shape \(1, 32, 32\)"),
    ((2, 3, 32, 32), [0, 10], r"targets must lie in \[0, 10\)"),
    ((2, 3, 32, 32), [-1, 0], r"targets must lie in \[0, 10\)"),
    ((3, 32, 32), [0], r"images must be \(N, C, H, W\)"),
])
def test_gradcam_api_errors_are_cifarlens_errors(shape, targets, message):
    from cifarlens.cam.gradcam import gradcam
    from cifarlens.training.models import build_model

    model = build_model("small", 10).eval()
    with pytest.raises(CifarlensError, match=message):
        gradcam(model, torch.randn(shape), targets)


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "", "--preset", "smoke"], "--out must not be empty"),
    (["study", "--out", " "], "--out must not be empty"),
    (["evaluate", ""], "run must not be empty"),
    (["failures", "somewhere", "--confident", "-5"], "--confident must be a probability"),
    (["failures", "somewhere", "--confident", "1.5"], "--confident must be a probability"),
])
def test_arguments_are_refused_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


# --- the study refuses early and reuses only what came from the final best.pt ----------------------


@pytest.mark.parametrize("change, message", [
    ("dataset=cifar10", "paired tests do not apply"),
    ("val_fraction=0.1", "paired tests do not apply"),
])
def test_guard_refuses_changes_that_break_the_pairing(change, message):
    from cifarlens.study.plan import plan_study

    with pytest.raises(CifarlensError, match=message):
        plan_study("smoke", change, seeds=1)


def test_seed_range_is_checked_for_every_seed_before_training():
    from cifarlens.study.plan import plan_study

    plan_study("smoke", seeds=1, overrides={"seed": 2**32 - 1})  # the largest seed alone is fine
    with pytest.raises(CifarlensError, match="runs past the largest seed"):
        plan_study("smoke", seeds=2, overrides={"seed": 2**32 - 1})


def test_two_changes_are_two_variants_not_narrowed(tmp_path, capsys):
    # argparse once kept only the last --change; now each is its own variant (test_ablation.py)
    a = build_parser().parse_args(["study", "--change", "lr=0.1", "--change",
                                       "label_smoothing=0"])
    assert a.change == ["lr=0.1", "label_smoothing=0"]
    out = tmp_path / "s"
    err = _one_line_error(capsys, ["study", "--out", str(out), "--change", "lr=0.1",
                                   "--change", "lr=0.1"])
    assert "--change lr=0.1 is given twice" in err
    assert not out.exists()


def test_explain_refuses_unknown_indices_before_writing(run_copy, capsys):
    before = sorted(p.name for p in run_copy.rglob("*"))
    err = _one_line_error(capsys, ["explain", str(run_copy), "--indices", "999999"])
    assert "indices not in the test split: [999999]" in err
    assert sorted(p.name for p in run_copy.rglob("*")) == before


def test_failure_gallery_is_bounded(run_copy):
    from PIL import Image

    from cifarlens.stages.failures import MAX_GALLERY, find_failures

    predict(run_copy, ("test",), device="cpu")
    notes: list[str] = []
    find_failures(run_copy, "test", top=MAX_GALLERY, log=notes.append)
    size = Image.open(run_copy / "figures" / "failures_test.png").size
    r = find_failures(run_copy, "test", top=1000, log=notes.append)
    assert Image.open(run_copy / "figures" / "failures_test.png").size == size
    assert any(f"first {MAX_GALLERY} of the 1000" in n for n in notes)
    assert len(r["failures"]) == r["total_wrong"] > MAX_GALLERY  # the JSON keeps every failure


def test_study_stage_evaluates_again_when_best_changed(run_copy):
    from cifarlens.pipeline import ensure_evaluated

    def stage_evaluate(run, log):
        return ensure_evaluated(Run(run), log=log, progress=False)

    stage_evaluate(run_copy, lambda m: None)
    assert all(Run(run_copy).current("predictions", s) is not None for s in ("test", "val"))
    stamp = (run_copy / "metrics_test.json").stat().st_mtime_ns
    stage_evaluate(run_copy, lambda m: None)  # current: reused
    assert (run_copy / "metrics_test.json").stat().st_mtime_ns == stamp
    _replace_best(run_copy)
    assert Run(run_copy).current("predictions", "test") is None
    stage_evaluate(run_copy, lambda m: None)  # made from another checkpoint: made again
    assert all(Run(run_copy).current("predictions", s) is not None for s in ("test", "val"))
    metrics = json.loads((run_copy / "metrics_test.json").read_text())
    assert metrics["checkpoint_sha256"] == checkpoint_sha256(run_copy)


def test_a_refused_run_leaves_no_empty_folder(synth100, tmp_path, capsys):
    out = tmp_path / "r"
    err = _one_line_error(capsys, ["train", "--out", str(out), "--preset", "smoke", "--device",
                                   "cpu", "--data-dir", str(synth100), "--train-limit", "50"])
    assert "below one image per class" in err
    assert not out.exists()


def test_explain_points_with_the_boxes_of_the_data_it_verified(analysed_copy, synth100):
    """Generated data carries object boxes; explain takes them from the manifest read with the
    data (no second read), so the pointing game is computed and equals a recount from the boxes
    in the dataset's own manifest file."""
    from cifarlens.cam.quality import pointing_game
    from cifarlens.data.synth import read_synth_info
    from cifarlens.stages.explain import ExplainOptions, explain, object_boxes

    r = explain(analysed_copy, "test", failures=4,
                options=ExplainOptions(correct_sample=40, steps=4), log=lambda m: None)
    assert r["pointing_game"]["n"] == 40 and 0 <= r["pointing_game"]["hit_rate"] <= 1
    data = Run(analysed_copy).data()
    idx = np.arange(10)
    want = np.asarray(read_synth_info(data.folder, verify=False)["boxes"]["test"])[idx]
    assert np.array_equal(object_boxes(data, "test", idx), want)
    assert pointing_game(np.ones((1, 32, 32)), want[:1]).tolist() == [False]  # flat map: miss


def test_a_full_disk_during_report_names_the_path_and_leaves_no_lock(tmp_path, capsys,
                                                                     monkeypatch):
    # issue 20: "No space left on device" without a path, and an empty .lock left behind
    import errno
    import os

    study = tmp_path / "study"
    study.mkdir()
    (study / "summary.json").write_text("{}")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    err = _one_line_error(capsys, ["report", str(study)])
    assert str(study) in err and "disk full" in err, err
    assert not (study / ".lock").exists()
    assert [p.name for p in study.iterdir()] == ["summary.json"]  # no temp file either
