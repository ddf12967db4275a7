"""The study end to end on generated data, the one-change guard, resume, and `report`."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cifarlens.errors import CifarlensError
from cifarlens.study import one_change_guard, parse_change, run_study
from cifarlens.train import make_config


def test_guard_accepts_exactly_one_change():
    a = make_config("smoke")
    assert one_change_guard(a, dataclasses.replace(a, augment="crop-flip")) == "augment"
    # runtime settings (device, precision, ...) are not training settings
    assert one_change_guard(a, dataclasses.replace(a, lr=0.01, device="cpu")) == "lr"


def test_guard_refuses_two_changes_and_names_them():
    a = make_config("smoke")
    b = dataclasses.replace(a, augment="crop-flip", label_smoothing=0.0)
    with pytest.raises(CifarlensError) as e:
        one_change_guard(a, b)
    msg = str(e.value)
    assert "2 settings" in msg and "augment ('none' vs 'crop-flip')" in msg
    assert "label_smoothing (0.1 vs 0.0)" in msg
    with pytest.raises(CifarlensError, match="no setting"):
        one_change_guard(a, a)
    with pytest.raises(CifarlensError, match="seed"):
        one_change_guard(a, dataclasses.replace(a, seed=1))


def test_parse_change_types_and_errors():
    assert parse_change("augment=crop-flip") == ("augment", "crop-flip")
    assert parse_change("label-smoothing=0") == ("label_smoothing", 0.0)
    assert parse_change("epochs=7") == ("epochs", 7)
    assert parse_change("train_limit=none") == ("train_limit", None)
    with pytest.raises(CifarlensError, match="choose from: dataset, model"):
        parse_change("device=cuda")
    with pytest.raises(CifarlensError, match="needs a float"):
        parse_change("lr=fast")
    with pytest.raises(CifarlensError, match="KEY=VALUE"):
        parse_change("augment")


def test_study_refuses_an_invalid_changed_value(tmp_path, synth100):
    with pytest.raises(CifarlensError, match="augment"):
        run_study(tmp_path / "s", preset="smoke", change="augment=rotate",
                  overrides={"data_dir": str(synth100)}, progress=False, log=lambda m: None)
    assert not (tmp_path / "s" / "study.json").exists()


@pytest.fixture(scope="module")
def study(tmp_path_factory, synth100):
    out = tmp_path_factory.mktemp("study") / "s"
    run_study(out, preset="smoke", overrides={"data_dir": str(synth100), "device": "cpu"},
              progress=False, log=lambda m: None)
    return out


def test_study_summary_matches_the_runs(study):
    s = json.loads((study / "summary.json").read_text())
    assert s["data_source"] == "generated" and s["change"] == {
        "key": "augment", "baseline": "none", "variant": "crop-flip"}
    for arm in ("baseline", "variant"):
        m = json.loads((study / "runs" / f"{arm}-s0" / "metrics_test.json").read_text())
        assert s["models"][arm]["test"]["top1"] == m["top1"]
        assert s["models"][arm]["params"] == 254_948
    c = s["comparison"]
    mc = c["mcnemar"]
    assert mc["both_right"] + mc["both_wrong"] + mc["a_only"] + mc["b_only"] == 1000
    diff = s["models"]["variant"]["test"]["top1"] - s["models"]["baseline"]["test"]["top1"]
    assert c["accuracy_difference"]["diff"] == pytest.approx(diff)
    assert (mc["b_only"] - mc["a_only"]) / 1000 == pytest.approx(diff)
    assert c["accuracy_difference"]["lo"] <= diff <= c["accuracy_difference"]["hi"]
    tr = s["failures"]["tracking"]
    assert tr["fixed"] + tr["still_wrong"] + tr["other_wrong"] == tr["tracked"] == 12
    assert len(s["failures"]["top"]) == 12
    for rel in s["figures"].values():
        assert (study / rel).is_file(), rel


def test_tracked_failures_match_the_variant_predictions(study):
    s = json.loads((study / "summary.json").read_text())
    p = np.load(study / "runs" / "variant-s0" / "predictions_test.npz")
    names = json.loads((study / "runs" / "variant-s0" / "config.json").read_text())["class_names"]
    for row in s["failures"]["top"]:
        vp = names[int(p["pred"][row["index"]])]
        assert row["variant"]["pred_name"] == vp
        assert (row["variant"]["status"] == "fixed") == (vp == row["true_name"])


def test_report_has_every_section_and_rebuilds(study):
    html = (study / "report.html").read_text()
    md = (study / "report.md").read_text()
    for word in ("Dataset", "Architecture", "Training", "Failure", "Grad-CAM", "Calibration",
                 "Complexity", "Reflection"):
        assert word in html and word in md
    assert "generated" in html.lower()
    before = (study / "report.html").stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "cifarlens", "report", str(study)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (study / "report.html").stat().st_mtime_ns >= before


def test_rerun_reuses_finished_runs(study):
    done = {p: p.stat().st_mtime_ns for p in study.glob("runs/*/done.json")}
    (study / "summary.json").unlink()
    (study / "report.html").unlink()
    run_study(study, preset="smoke", overrides={"data_dir": json.loads(
        (study / "study.json").read_text())["baseline"]["data_dir"], "device": "cpu"},
        progress=False, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in study.glob("runs/*/done.json")} == done
    assert (study / "report.html").exists()


def test_a_different_study_in_the_same_folder_is_refused(study):
    data_dir = json.loads((study / "study.json").read_text())["baseline"]["data_dir"]
    with pytest.raises(CifarlensError, match="different study"):
        run_study(study, preset="smoke", change="label_smoothing=0",
                  overrides={"data_dir": data_dir}, progress=False, log=lambda m: None)


def test_report_command_on_a_non_study_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cifarlens", "report", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


def test_several_seeds_give_mean_std_and_a_paired_test(tmp_path, synth100):
    out = tmp_path / "seeds"
    s = run_study(out, preset="smoke", seeds=2, failures_top=4,
                  overrides={"data_dir": str(synth100), "device": "cpu", "epochs": 1,
                             "train_limit": 1000}, progress=False, log=lambda m: None)
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "baseline-s0", "baseline-s1", "variant-s0", "variant-s1"]
    seeds = s["comparison"]["seeds"]
    a = [r["test_top1"] for r in s["models"]["baseline"]["per_seed"]]
    b = [r["test_top1"] for r in s["models"]["variant"]["per_seed"]]
    assert seeds["n"] == 2 and seeds["mean_a"] == pytest.approx(np.mean(a))
    assert seeds["mean_diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert seeds["std_a"] == pytest.approx(np.std(a, ddof=1))
    assert [m["seed"] for m in seeds["mcnemar_per_seed"]] == [0, 1]
    assert a[0] != a[1]  # the seeds really differ
