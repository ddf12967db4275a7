"""Issue 22 end to end: the verdict records a study writes into summary.json, checked against
each run's own files recomputed independently, the report's sentences from them, a version-2
summary written before them, the --seeds auto wave loop (simulated as implemented, and one real
small study) and the study flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cifarlens.analysis import metrics as M
from cifarlens.analysis.power import decide, minimal_detectable_effect
from cifarlens.analysis.sequential import sequential_rule
from cifarlens.analysis.superclass_stats import superclass_cluster_test
from cifarlens.cli import build_parser
from cifarlens.cli.args import train_overrides
from cifarlens.cli.study import study_design
from cifarlens.report.render import render_report
from cifarlens.runs import Run
from cifarlens.study import verdicts as V
from cifarlens.study.design import Design
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.options import StudyOptions
from cifarlens.study.run import run_study
from cifarlens.study.schema import read_summary, summary_from_json
from cifarlens.study.waves import run_waves
from cifarlens.training.config import vary_overrides

BASE = {"device": "cpu", "dataset": "cifar10", "train_limit": 300, "precision": "fp32"}


def _quiet(_m: str) -> None:
    pass


@pytest.fixture(scope="module")
def study(tmp_path_factory, synth10):
    """2 seeds x 2 arms, 2 epochs (so convergence can be judged), --vary init."""
    out = tmp_path_factory.mktemp("verdicts") / "s"
    run_study(out, preset="smoke", seeds=Design(seeds=2, margin=0.02, detect=0.05),
              overrides={**BASE, "epochs": 2, "data_dir": str(synth10),
                         **vary_overrides(["init"], 0)},
              options=StudyOptions(failures_top=2), engine=LocalEngine(progress=False), log=_quiet)
    return out


def _correct(out, name):
    p = Run(out / "runs" / name).predictions("test")
    return p["pred"] == p["labels"]


def test_the_decision_and_its_power_match_the_runs(study):
    s = read_summary(study / "summary.json")
    sb = s.main.comparison.seeds
    a = [_correct(study, f"baseline-s{i}") for i in (0, 1)]
    b = [_correct(study, f"variant-s{i}") for i in (0, 1)]
    diffs = [b[i].mean() - a[i].mean() for i in (0, 1)]
    want = decide(diffs, 0.02, detect=0.05)
    d = sb.decision
    assert d.decision == want.decision and d.margin == 0.02 and d.detect == 0.05
    assert d.mean_diff == pytest.approx(np.mean(diffs))
    if want.mde is not None:  # in accuracy units, like every other difference
        assert d.mde == pytest.approx(minimal_detectable_effect(np.std(diffs, ddof=1), 2))
        assert d.mde == pytest.approx(11.55 * np.std(diffs, ddof=1), rel=1e-3)
    # P(variant > baseline): the share of seed pairs, ties one half
    wins = np.mean([(x > 0) + 0.5 * (x == 0) for x in diffs])
    assert sb.prob_improvement.p == pytest.approx(wins) and sb.prob_improvement.n == 2
    # the seed-level SD and each seed's image-sampling SD from its discordant counts
    assert sb.noise.seed_sd == pytest.approx(np.std(diffs, ddof=1))
    for i in (0, 1):
        bb, cc, n = (a[i] & ~b[i]).sum(), (~a[i] & b[i]).sum(), a[i].size
        assert sb.noise.image_sampling_sd_per_seed[i] == pytest.approx(
            math.sqrt(bb + cc - (cc - bb) ** 2 / n) / n)


def test_calibration_records_match_the_runs(study):
    s = read_summary(study / "summary.json")
    ea = [Run(study / "runs" / f"baseline-s{i}").metrics("test")["ece"] for i in (0, 1)]
    eb = [Run(study / "runs" / f"variant-s{i}").metrics("test")["ece"] for i in (0, 1)]
    es = s.main.comparison.ece_seeds
    assert es.per_seed == pytest.approx(np.subtract(eb, ea).tolist())
    assert es.verdict in ("not decided", "not tested", "better calibrated", "worse calibrated",
                          "equally calibrated", "no detectable difference")
    assert [x.test_ece for x in s.baseline.per_seed] == pytest.approx(ea)
    # the interval's point estimates are metrics.ece's numbers, before and after scaling
    iv = s.baseline.calibration.intervals
    run = Run(study / "runs" / "baseline-s0")
    p, t = run.predictions("test"), run.metrics("test")["temperature_scaling"]["temperature"]
    assert iv.before.ece == pytest.approx(M.ece(M.softmax(p["logits"]), p["labels"]), abs=1e-12)
    assert iv.after.ece == pytest.approx(
        M.ece(M.apply_temperature(p["logits"], t), p["labels"]), abs=1e-12)
    assert iv.before.lo <= iv.before.ece <= iv.before.hi and iv.temperature == t


def test_settings_convergence_explain_and_vary_are_recorded(study):
    s = read_summary(study / "summary.json")
    assert s.verdicts.margin == 0.02 and s.verdicts.detect == 0.05
    assert s.verdicts.vary == ["init"] and s.verdicts.seeds == "fixed"
    # --vary init: every run of the study shares seed 0's split
    splits = [Run(study / "runs" / n).split_indices()["val"]
              for n in ("baseline-s0", "baseline-s1", "variant-s1")]
    assert all(np.array_equal(splits[0], x) for x in splits[1:])
    from cifarlens.analysis.convergence import convergence

    hists = {r.name: r.history() for r in (Run(p) for p in sorted((study / "runs").iterdir()))}
    want = convergence(hists)
    assert s.convergence.converged == want["converged"] is not None  # 2 epochs: judged
    assert s.convergence.still_improving == want["still_improving"]
    assert s.explain.model == "baseline" and s.explain.seed == 0


def test_the_report_states_the_records(study):
    html, md = render_report(study)
    doc = md.read_text(encoding="utf-8").replace("\\", "")
    s = read_summary(study / "summary.json")
    d = s.main.comparison.seeds.decision
    assert "with 2 seeds this study could detect changes of about" in doc or d.mde is None
    assert "equivalence margin ±2 points" in doc and "plans for 5 points" in doc
    assert "differ between seeds: init." in doc
    assert "P(variant > baseline) = " in doc
    assert "redrawing the test images would move one pair's difference" in doc
    assert "For the baseline (seed 0), deleting pixels" in doc
    assert "For the baseline (seed 0), on failures" in doc
    assert "The baseline's test ECE (seed 0) is" in doc
    # the CLI's own headline is the report's words
    from cifarlens.report import headline

    assert headline(s, study).split("crop-flip: ", 1)[1][:80] in doc


def test_a_version_2_summary_from_before_the_records_reads_and_is_judged_alike(study, tmp_path):
    data = json.loads((study / "summary.json").read_text())
    for key in ("verdicts", "convergence"):
        data.pop(key)
    v = data["variants"][0]
    for key in ("decision", "prob_improvement", "noise", "sequential"):
        v["comparison"]["seeds"].pop(key)
    v["comparison"].pop("ece_seeds")
    for m in (data["baseline"], v["model"]):
        m["calibration"].pop("intervals")
        for x in m["per_seed"]:
            x.pop("test_ece")
    data["explain"].pop("model")
    data["explain"].pop("seed")
    old = summary_from_json(data)
    assert old.main.comparison.seeds.decision is None and old.verdicts is None
    from cifarlens.report.view import main_decision

    got = main_decision(old)  # the same rule from the seed block, default margin
    sb = old.main.comparison.seeds
    want = decide({"n": sb.n, "mean_diff": sb.mean_diff, "std_diff": sb.std_diff}, 0.01)
    assert got["decision"] == want.decision and got["mde"] == pytest.approx(want.mde)
    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(data))
    md = render_report(out)[1].read_text(encoding="utf-8")
    # no convergence record: "not checked"; no seed-level ECE test: numbers only
    assert "was not checked" in md and "One pair of models is not a test of calibration" in md


def test_superclass_cluster_record_is_the_analysis_on_the_runs_predictions(analysed_run):
    run = Run(analysed_run)
    data = run.data()
    rec = V.superclass_cluster(run, data.fine_to_coarse)
    p = run.predictions("test")
    want = superclass_cluster_test(p["labels"], p["pred"], data.fine_to_coarse)
    assert rec.errors == want["errors"] and rec.decision == want["decision"]
    assert rec.share_ci == pytest.approx(want["share_ci"])
    assert V.superclass_cluster(run, None) is None


# --------------------------------------------------------------------------- --seeds auto


def _fake_study(mu: dict[str, float], sd: float, seed: int):
    rng = np.random.default_rng(seed)
    draws = {k: rng.normal(m, sd, 100) for k, m in mu.items()}
    trained: list[list[int]] = []

    def produce(seeds):
        trained.append(list(seeds))

    def diffs(slug, seeds):
        return [float(draws[slug][s]) for s in seeds]

    return produce, diffs, trained, draws


def test_the_wave_loop_records_the_rule_at_every_look_and_stops_when_decided():
    plan = {"seeds": [0, 1, 2], "changes": [{"slug": "variant", "key": "a", "baseline": 0,
                                              "variant": 1}]}
    produce, diffs, trained, draws = _fake_study({"variant": 0.05}, 0.01, 0)
    design = Design(seeds="auto", max_seeds=10, margin=0.01)
    run_waves(plan, design, 1, produce, diffs, _quiet)
    looks = plan["sequential"]["looks"]["variant"]
    n = len(plan["seeds"])
    assert [t[-1] for t in trained] == [k - 1 for k in range(3, n + 1)]  # one pair per wave
    for look in looks:  # each look is the rule on that prefix, as implemented
        want = sequential_rule(draws["variant"][:look["n"]], design.looks(1), 0.01)
        assert look["decision"] == want.decision and look["t"] == pytest.approx(want.t)
    assert looks[-1]["stop"] and looks[-1]["decision"] == "helped" and n < 10
    assert all(not x["stop"] for x in looks[:-1])


def test_the_wave_loop_goes_on_while_any_change_is_open_and_splits_alpha():
    plan = {"seeds": [5, 6, 7], "changes": [
        {"slug": "big", "key": "a", "baseline": 0, "variant": 1},
        {"slug": "none", "key": "b", "baseline": 0, "variant": 1}]}
    produce, diffs, trained, draws = _fake_study({"big": 0.2, "none": 0.0}, 0.02, 1)
    design = Design(seeds="auto", max_seeds=8, margin=0.001)
    run_waves(plan, design, 2, produce, diffs, _quiet)
    assert plan["seeds"] == list(range(5, 13))  # waves of 2: looks 4, 6, 8; never decided
    assert [len(t) for t in trained] == [4, 6, 8]
    big, none = plan["sequential"]["looks"]["big"], plan["sequential"]["looks"]["none"]
    assert big[-1]["stop"] and len(big) < len(none)
    assert none[-1]["n"] == 8 and none[-1]["decision"] == "not decided"
    assert {x["alpha"] for x in big + none} == {0.025}  # Bonferroni over the 2 changes


def test_a_real_auto_study_runs_in_waves_and_reports_each_look(tmp_path, synth10):
    out = tmp_path / "auto"
    s = run_study(out, preset="smoke", seeds=Design(seeds="auto", max_seeds=4),
                  overrides={**BASE, "epochs": 1, "data_dir": str(synth10)}, options=StudyOptions(failures_top=2),
                  engine=LocalEngine(progress=False), log=_quiet)
    plan = json.loads((out / "study.json").read_text())
    seq = s.main.comparison.seeds.sequential
    assert plan["design"]["seeds"] == "auto" and seq.looks == [3, 4] and seq.wave == 1
    assert len(s.seeds) in (3, 4) and [x.n for x in seq.history] == [3, 4][:len(seq.history)]
    assert plan["sequential"]["looks"]["variant"][-1]["n"] == len(s.seeds)  # recorded
    d = s.main.comparison.seeds.decision
    assert d.rule == "sequential" and d.decision == seq.history[-1].decision
    assert (d.lo, d.hi) == (seq.history[-1].lo, seq.history[-1].hi)
    assert "--seeds auto --max-seeds 4" in s.command
    md = render_report(out)[1].read_text(encoding="utf-8")
    assert "Every look of --seeds auto" in md and "O'Brien-Fleming" in md


def test_the_study_flags_make_the_design_and_hold_the_sources():
    a = build_parser().parse_args(["study", "--seeds", "auto", "--max-seeds", "6", "--margin",
                                   "0.5", "--detect", "2", "--vary", "init,order", "--seed", "4"])
    design, over = study_design(a, train_overrides(a))
    assert design == Design(seeds="auto", max_seeds=6, margin=0.005, detect=0.02)
    assert over == {"seed": 4, "split_seed": 4, "aug_seed": 4}
    b = build_parser().parse_args(["study"])
    design, over = study_design(b, train_overrides(b))
    assert design == Design() and over == {}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "--vary", "init,weights"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "--margin", "0"])
