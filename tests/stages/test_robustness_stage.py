"""`cifarlens robustness RUN`: what it writes through Run, from the command line, on a trained
smoke run."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from cifarlens.analysis import corruptions as C
from cifarlens.cli import main
from cifarlens.runs import Run
from cifarlens.stages.robustness import read_per_image

ARGS = ["--images", "200", "--corruptions", "gaussian_noise", "contrast", "saturate",
        "--severities", "1", "5", "--no-progress", "--device", "cpu"]


def test_robustness_command_writes_json_csv_npz_and_figure(run_copy, capsys):
    assert main(["robustness", str(run_copy), *ARGS]) == 0
    run = Run(run_copy)
    rec = json.loads(run.file(Run.robustness_name("test")).read_text())
    assert rec["source"] == "corruptions computed locally, not the published CIFAR-100-C files"
    assert set(rec["corruptions"]) == {"gaussian_noise", "contrast"}
    assert set(rec["held_out"]) == {"saturate"}
    assert set(rec["corruptions"]["contrast"]) == {"1", "5"}
    assert rec["n_images"] == len(rec["indices"]) == 200
    labels = run.split_arrays("test")[1]
    assert np.bincount(labels[rec["indices"]]).min() == 2  # class-balanced: 2 per class
    assert run.current("robustness", "test") == rec
    # the CSV and the per-image file say the same as the JSON
    rows = list(csv.DictReader(io.StringIO(run.file(Run.robustness_name("test", "csv"))
                                          .read_text())))
    assert len(rows) == 1 + 3 * 2 and rows[0]["corruption"] == "clean"
    assert all(r["source"] == rec["source"] for r in rows)
    per = read_per_image(run)
    for r in rows[1:]:
        table = rec["held_out"] if r["held_out"] == "1" else rec["corruptions"]
        acc = table[r["corruption"]][r["severity"]]
        assert float(r["accuracy"]) == acc
        row = per["conditions"].index(f"{r['corruption']}/{r['severity']}")
        assert per["correct"][row].mean() == pytest.approx(acc)
    assert run.file(rec["figures"]["severity"]).stat().st_size > 10_000
    assert run.analysis()["robustness_test"]["numbers"]["n_images"] == 200
    assert "wrote" in capsys.readouterr().out


def test_an_output_from_another_checkpoint_is_not_current(run_copy):
    assert main(["robustness", str(run_copy), *ARGS]) == 0
    path = Run(run_copy).file(Run.robustness_name("test"))
    rec = json.loads(path.read_text())
    path.write_text(json.dumps(dict(rec, checkpoint_sha256="0" * 64)))
    assert Run(run_copy).current("robustness", "test") is None


def test_published_files_are_read_instead_of_computed(run_copy, tmp_path):
    run = Run(run_copy)
    x, y, idx = run.split_arrays("test")
    stack = [C.corrupt(x, "fog", s, idx).numpy() for s in C.SEVERITIES]
    np.save(tmp_path / "fog.npy", np.concatenate(stack).transpose(0, 2, 3, 1))
    np.save(tmp_path / "labels.npy", np.tile(y, 5).astype(np.int64))
    base = ["--images", "100", "--corruptions", "fog", "--severities", "2", "--no-progress",
            "--device", "cpu"]
    assert main(["robustness", str(run_copy), *base]) == 0
    local = json.loads(run.file(Run.robustness_name("test")).read_text())
    assert main(["robustness", str(run_copy), *base, "--corruptions-dir", str(tmp_path)]) == 0
    read = json.loads(run.file(Run.robustness_name("test")).read_text())
    assert read["corruptions"] == local["corruptions"]
    assert read["source"].startswith("user-supplied files in the CIFAR-C format")
    assert len(read["files"]["fog"]["sha256"]) == 64


def test_bad_requests_are_one_line_errors(run_copy, capsys, tmp_path):
    assert main(["robustness", str(run_copy), "--corruptions", "rain", "--no-progress"]) == 1
    assert "unknown corruption 'rain'" in capsys.readouterr().err
    assert main(["robustness", str(run_copy), "--corruptions-dir", str(tmp_path),
                 "--no-progress"]) == 1
    assert "has no labels.npy" in capsys.readouterr().err
    assert main(["robustness", str(run_copy), "--split", "val", "--corruptions-dir",
                 str(tmp_path), "--no-progress"]) == 1
    assert "use --split test" in capsys.readouterr().err


# --- what a study asks of a run: pipeline.ensure_robustness ------------------------------------


def test_ensure_robustness_makes_it_once_and_again_for_another_request(run_copy):
    from cifarlens.pipeline import ensure_robustness
    from cifarlens.stages.robustness import RobustnessRequest, current_robustness

    run = Run(run_copy)
    ask = RobustnessRequest(images=100, corruptions=("contrast", "speckle_noise"),
                            severities=(2, 4))
    quiet = dict(progress=False, log=lambda m: None)
    assert ensure_robustness(run, ask, **quiet)
    rec = current_robustness(run, ask)
    assert rec is not None and rec["n_images"] == 100 and rec["severities"] == [2, 4]
    assert set(rec["held_out"]) == {"speckle_noise"}
    assert not ensure_robustness(run, ask, **quiet)  # current: nothing to do
    # another request (more images, other severities) is not stood in for
    for other in (RobustnessRequest(200, ask.corruptions, ask.severities),
                  RobustnessRequest(100, ask.corruptions, (2,)),
                  RobustnessRequest(100, ("contrast",), (2, 4))):
        assert current_robustness(run, other) is None
    # a record from another checkpoint is stale
    path = run.file(Run.robustness_name("test"))
    path.write_text(json.dumps(dict(json.loads(path.read_text()), checkpoint_sha256="0" * 64)))
    assert current_robustness(Run(run_copy), ask) is None
    assert ensure_robustness(Run(run_copy), ask, **quiet)


def test_images_under_corruption_equal_the_stage_rows(run_copy):
    """The study's tracked failures are evaluated apart from the stage's subset: the same
    images must give the same rows (each corrupted with its own test index's draws)."""
    from cifarlens.stages.robustness import (
        RobustnessRequest,
        choose_images,
        images_under_corruption,
    )

    ask = RobustnessRequest(images=100, corruptions=("gaussian_noise", "glass_blur", "saturate"),
                            severities=(1, 5))
    assert main(["robustness", str(run_copy), "--images", "100", "--corruptions",
                 *ask.corruptions, "--severities", "1", "5", "--no-progress",
                 "--device", "cpu"]) == 0
    run = Run(run_copy)
    per = read_per_image(run)
    y = run.split_arrays("test")[1]
    subset = choose_images(y, torch.device("cpu"), 100)
    pick = [7, 3, 55]  # positions within the subset, out of order
    got = images_under_corruption(run, subset[pick], ask, device="cpu")
    assert "saturate/1" not in got["conditions"]  # held out: not in the mCE, not tracked
    for c, row in zip(got["conditions"], got["correct"], strict=True):
        np.testing.assert_array_equal(row, per["correct"][per["conditions"].index(c)][pick])
