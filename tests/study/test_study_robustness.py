"""`cifarlens study --robustness` wired end to end on a small generated study: every run of
every arm evaluated in its analysis phase, the summary's comparison recomputed here from the
runs' own files, the tracked failures' counts from the runs' per-image files, the report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from cifarlens.analysis.corruptions import SOURCE_NOTE
from cifarlens.cli import main
from cifarlens.errors import CifarlensError
from cifarlens.runs import Run
from cifarlens.stages.robustness import RobustnessRequest, current_robustness, read_per_image
from cifarlens.study.options import StudyOptions
from cifarlens.study.schema import read_summary

NAMES = ("gaussian_noise", "contrast")
# every test image of the generated set (100 classes x 10), so the tracked failures are in
# each run's per-image file too
ASK = RobustnessRequest(images=1000, corruptions=NAMES, severities=(1, 5))


@pytest.fixture(scope="module")
def study(tmp_path_factory, synth100):
    out = tmp_path_factory.mktemp("robust") / "s"
    assert main(["study", "--preset", "smoke", "--data-dir", str(synth100), "--device", "cpu",
                 "--epochs", "1", "--train-limit", "500", "--seeds", "2", "--top", "3",
                 "--out", str(out), "--no-progress", "--robustness", "--robustness-images",
                 "1000", "--robustness-corruptions", *NAMES, "--robustness-severities",
                 "5", "1"]) == 0
    return out


def _family_acc(rec, name):
    return float(np.mean(list(rec["corruptions"][name].values())))


def test_every_run_is_evaluated_and_the_comparison_recomputes(study):
    s = read_summary(study / "summary.json")
    runs = {arm: [Run(study / "runs" / f"{arm}-s{k}") for k in (0, 1)]
            for arm in ("baseline", "variant")}
    recs = {arm: [current_robustness(r, ASK, "cpu") for r in rs] for arm, rs in runs.items()}
    assert all(r is not None for rs in recs.values() for r in rs)
    assert s.robustness.n_images == 1000 and s.robustness.source == SOURCE_NOTE
    assert s.robustness.corruptions == list(NAMES) and s.robustness.severities == [1, 5]
    comp = s.main.robustness
    for fam, name in (("noise", "gaussian_noise"), ("digital", "contrast")):
        a = [_family_acc(r, name) for r in recs["baseline"]]
        b = [_family_acc(r, name) for r in recs["variant"]]
        t = comp.families[fam]
        assert (t.mean_a, t.mean_b) == pytest.approx((np.mean(a), np.mean(b)))
        if np.std(np.subtract(b, a)) > 0:  # else no test (zero variance)
            assert t.p_value == pytest.approx(sps.ttest_rel(b, a).pvalue)
    # overall: the mean over both corruptions; Holm over the 2 families run
    a = [np.mean([_family_acc(r, n) for n in NAMES]) for r in recs["baseline"]]
    b = [np.mean([_family_acc(r, n) for n in NAMES]) for r in recs["variant"]]
    assert comp.overall.mean_diff == pytest.approx(np.mean(b) - np.mean(a))
    ps = sorted(t.p_value for t in comp.families.values() if t.p_value is not None)
    if len(ps) == 2:
        assert min(t.p_holm for t in comp.families.values()) == pytest.approx(min(1, 2 * ps[0]))
    assert comp.mce.baseline == pytest.approx(1 - np.mean(a))
    assert (study / s.main.figures["robustness"]).stat().st_size > 10_000
    assert "--robustness --robustness-images 1000" in s.command
    assert "--robustness-severities 1 5" in s.command


def test_tracked_failures_count_the_runs_own_rows(study):
    s = read_summary(study / "summary.json")
    assert s.main.failures.top
    for arm, key in (("baseline", "baseline_right"), ("variant", "variant_right")):
        run = Run(study / "runs" / f"{arm}-s0")
        per = read_per_image(run)
        where = {i: k for k, i in enumerate(run.current("robustness")["indices"])}
        rows = [k for k, c in enumerate(per["conditions"]) if c != "clean"]
        for f in s.main.failures.top:
            assert f.corruption.conditions == len(rows) == 4
            assert getattr(f.corruption, key) == int(per["correct"][rows, where[f.index]].sum())


def test_report_says_it(study):
    m = (study / "report.md").read_text()
    assert "## " in m and "Robustness to common corruptions" in m
    assert "Robustness (1,000 test images, corruptions computed locally)" in m
    assert "Tracked failures under corruption" in m


def test_robustness_flags_without_robustness_and_bad_names_are_refused(capsys, tmp_path):
    assert main(["study", "--out", str(tmp_path / "x"), "--robustness-images", "50"]) == 1
    assert "need --robustness" in capsys.readouterr().err
    with pytest.raises(CifarlensError, match="unknown corruption 'rain'"):
        StudyOptions(robustness=RobustnessRequest(corruptions=("rain",))).check()
    with pytest.raises(CifarlensError, match="at least one of the 15 main"):
        StudyOptions(robustness=RobustnessRequest(corruptions=("saturate",))).check()
    assert not (tmp_path / "x").exists()
