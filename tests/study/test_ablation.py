"""Several one-change variants against one shared baseline: the plan, Holm's adjustment, the
ablation table, adding a change to a study, frozen report figures and whole-study progress."""

import base64
import copy
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape
from summaries import summary_json

from cifarlens.analysis.power import decide
from cifarlens.analysis.stats import holm, mcnemar_exact
from cifarlens.errors import CifarlensError
from cifarlens.report.embed import compact_image, is_photo_figure
from cifarlens.report.first_screen import ablation_lines, describe_ablation_row
from cifarlens.report.formats import fmt_p, md_escape
from cifarlens.report.render import render_report
from cifarlens.report.sentences import describe_tracking
from cifarlens.study.engines.local import LocalEngine
from cifarlens.study.options import StudyOptions
from cifarlens.study.plan import change_slug, plan_study
from cifarlens.study.progress import StudyProgress
from cifarlens.study.run import run_study
from cifarlens.study.schema import read_summary, summary_from_json, to_json

# --- Holm -----------------------------------------------------------------------------------------


def test_holm_hand_computed():
    # sorted p_(i) * (m - i + 1): 0.05, 0.08, 0.09, 0.08 -> 0.09 (monotone), 0.05 -> 0.09
    got = holm([0.01, 0.02, 0.03, 0.04, 0.05])
    assert got == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    # input order kept: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one test: nothing to adjust
    assert holm([]) == []


def test_holm_missing_p_counts_in_the_family():
    # a change without a test still counts in m: 0.01 * 2, not 0.01 * 1
    assert holm([0.01, None]) == [pytest.approx(0.02), None]
    with pytest.raises(CifarlensError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_holm_between_raw_and_bonferroni_and_order_preserving(ps):
    adj = holm(ps)
    m = len(ps)
    for p, a in zip(ps, adj, strict=True):
        assert p - 1e-12 <= a <= min(1.0, m * p) + 1e-12
    for i in range(m):
        for j in range(m):
            if ps[i] < ps[j]:
                assert adj[i] <= adj[j] + 1e-12


def test_ablation_decision_uses_the_holm_adjusted_p():
    """A row's decision is power.decide with the Holm-adjusted p: significant alone (p 0.03)
    but not after the adjustment (0.06) is not "hurt" (issue 22's headline/table case)."""
    d = [-0.012, -0.015, -0.018]
    assert decide(d).decision == "hurt"
    assert decide(d, 0.01, p_adjusted=0.06).decision == "not decided"
    assert decide(d, p_adjusted=0.06).decision == "no detectable difference"
    assert decide([0.05], 0.01).decision == "not tested"


# --- the plan ---------------------------------------------------------------------------------------


def test_plan_one_variant_per_change_each_one_setting_off():
    plan, arms = plan_study("smoke", seeds=2, changes=["augment=crop-flip", "label_smoothing=0",
                                                       "weight_decay=1e-3"])
    assert list(arms) == ["baseline", "augment=crop-flip", "label_smoothing=0.0",
                          "weight_decay=0.001"]
    base = plan["baseline"]
    for c in plan["changes"]:
        v = plan["variants"][c["slug"]]
        assert {k for k in base if base[k] != v[k]} == {c["key"]}
        assert c["baseline"] == base[c["key"]] and c["variant"] == v[c["key"]]
    # the one-change keys describe the first change
    assert plan["change"] == {"key": "augment", "baseline": "none", "variant": "crop-flip"}
    assert plan["variant"] == plan["variants"]["augment=crop-flip"]
    # one change keeps the one-change folder names
    plan1, arms1 = plan_study("smoke", changes=["augment=crop-flip"])
    assert list(arms1) == ["baseline", "variant"] and plan1["changes"][0]["slug"] == "variant"
    assert plan_study("smoke", "augment=crop-flip")[0]["changes"] == plan1["changes"]


def test_misspelled_change_suggests_only_accepted_keys():
    from cifarlens.study.plan import PAIRING_SETTINGS, parse_change

    with pytest.raises(CifarlensError, match="not a training setting") as e:
        parse_change("lerning_rate=0.1")
    offered = str(e.value).split("choose from: ", 1)[1].split(", ")
    assert "lr" in offered and not set(offered) & set(PAIRING_SETTINGS)
    with pytest.raises(CifarlensError, match="dataset is refused"):
        parse_change("dataset=cifar10")


def test_plan_refuses_per_change():
    with pytest.raises(CifarlensError, match="dataset is refused"):
        plan_study("smoke", changes=["augment=crop-flip", "dataset=cifar10"])
    with pytest.raises(CifarlensError, match="val_fraction is refused"):
        plan_study("smoke", changes=["lr=0.1", "val_fraction=0.3"])
    with pytest.raises(CifarlensError, match="no setting"):  # equal to the baseline's value
        plan_study("smoke", changes=["augment=crop-flip", "label_smoothing=0.1"])
    with pytest.raises(CifarlensError, match="given twice"):
        plan_study("smoke", changes=["augment=crop-flip", "augment=crop-flip"])
    with pytest.raises(CifarlensError, match="either"):
        plan_study("smoke", "augment=crop-flip", changes=["lr=0.1"])
    # two values of one setting are two variants, each one setting off the baseline
    _, arms = plan_study("smoke", changes=["lr=0.1", "lr=0.01"])
    assert list(arms) == ["baseline", "lr=0.1", "lr=0.01"]


def test_change_slug_is_folder_safe_and_unique():
    assert change_slug("augment", "crop-flip") == "augment=crop-flip"
    assert change_slug("model", "my pkg/mod:f") == "model=my_pkg_mod_f"
    long_a, long_b = change_slug("model", "a" * 80 + ":f"), change_slug("model", "a" * 80 + ":g")
    assert len(long_a) <= 60 and long_a != long_b
    assert re.fullmatch(r"[A-Za-z0-9._=+-]+", long_a)


def test_study_progress_eta_from_measured_time_per_run():
    now = [100.0]
    lines: list[str] = []
    p = StudyProgress(8, 2, lines.append, clock=lambda: now[0])
    p.begin()
    assert lines[-1].startswith("[2/8 runs] 6 to train")
    now[0] += 120  # one run: 2 min, 5 left -> 10 min
    assert p.run_done("baseline seed 1", 120) == ("[3/8 runs] baseline seed 1 done in 2 min; "
                                                  "5 left, about 10 min left")
    now[0] += 60  # two runs in 3 min: 1.5 min per run, 4 left -> 6 min
    assert p.run_done("variant seed 1", 60).endswith("4 left, about 6 min left")


# --- a study with two changes ---------------------------------------------------------------------


OVERRIDES = {"device": "cpu", "dataset": "cifar10", "epochs": 1, "train_limit": 500}
CHANGES = ["augment=crop-flip", "label_smoothing=0"]


@pytest.fixture(scope="module")
def multi(tmp_path_factory, synth10):
    out = tmp_path_factory.mktemp("multi") / "s"
    lines: list[str] = []
    run_study(out, preset="smoke", seeds=2, changes=CHANGES, options=StudyOptions(failures_top=3),
              overrides={**OVERRIDES, "data_dir": str(synth10)}, engine=LocalEngine(progress=False),
              log=lines.append)
    render_report(out)
    return out, lines


def _load(out):
    return json.loads((out / "summary.json").read_text())


def _top1(run):
    p = np.load(run / "predictions_test.npz")
    return p["pred"] == p["labels"]


def test_one_shared_baseline_and_one_variant_per_change(multi):
    out, _ = multi
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "augment=crop-flip-s0", "augment=crop-flip-s1", "baseline-s0", "baseline-s1",
        "label_smoothing=0.0-s0", "label_smoothing=0.0-s1"]
    study = json.loads((out / "study.json").read_text())
    assert [c["slug"] for c in study["changes"]] == ["augment=crop-flip", "label_smoothing=0.0"]
    base = json.loads((out / "runs/baseline-s1/config.json").read_text())["config"]
    for slug, key in (("augment=crop-flip", "augment"), ("label_smoothing=0.0", "label_smoothing")):
        cfg = json.loads((out / f"runs/{slug}-s1/config.json").read_text())["config"]
        assert [k for k in base if cfg[k] != base[k]] == [key]  # seed 1 for both, same split


def test_summary_keeps_one_change_keys_and_adds_variants_and_ablation(multi):
    out, _ = multi
    s = _load(out)
    v = s["variants"]
    assert [x["slug"] for x in v] == ["augment=crop-flip", "label_smoothing=0.0"]
    assert s["variants"][0]["comparison"] == v[0]["comparison"] and s["variants"][0]["model"] == v[0]["model"]
    assert s["variants"][0]["change"] == v[0]["change"] and s["variants"][0]["failures"]["top"] == v[0]["failures"]["top"]
    ab = s["ablation"]
    assert ab["m"] == 2 and ab["correction"] == "holm"
    assert ab["covers"] == "training seeds and test-image sampling"
    ps = [x["comparison"]["seeds"]["p_value"] for x in v]
    assert [r["p"] for r in ab["rows"]] == ps
    assert [r["p_holm"] for r in ab["rows"]] == pytest.approx(holm(ps))
    a = [_top1(out / "runs" / f"baseline-s{sd}") for sd in (0, 1)]
    for r, x in zip(ab["rows"], v, strict=True):
        b = [_top1(out / "runs" / f"{x['slug']}-s{sd}") for sd in (0, 1)]
        # the seed-level numbers from each seed's own predictions
        assert r["diff"] == pytest.approx(np.mean([b[i].mean() - a[i].mean() for i in (0, 1)]))
        assert r["lo"] <= r["diff"] <= r["hi"]
        diffs = [b[i].mean() - a[i].mean() for i in (0, 1)]
        want = decide(diffs, 0.01, p_adjusted=r["p_holm"]).decision
        assert r["verdict"] == r["decision"]["decision"] == want
        assert r["decision"]["p_adjusted"] == pytest.approx(r["p_holm"])
        for i, m in enumerate(r["per_seed_mcnemar"]):
            assert m["seed"] == i and m["a_only"] == int((a[i] & ~b[i]).sum())
            assert m["b_only"] == int((~a[i] & b[i]).sum())
            assert m["p_value"] == mcnemar_exact(a[i], b[i])["p_value"]
        # tracking in each variant: the baseline's failures against that variant's predictions
        pv = np.load(out / "runs" / f"{x['slug']}-s0" / "predictions_test.npz")
        wrong_a = ~a[0]
        assert x["failures"]["tracking"]["all_errors"]["fixed"] == int(
            (wrong_a & (pv["pred"] == pv["labels"])).sum())
        for f in x["figures"].values():
            assert (out / f).is_file()
    assert v[1]["figures"] == {"gradcam_tracking": "figures/gradcam_tracking_label_smoothing=0.0.png",
                               "curves": "figures/curves_label_smoothing=0.0.png"}


def _embedded(png: bytes, key: str) -> str:
    """The base64 text the report embeds for this PNG drawn as figure `key`."""
    return base64.b64encode(compact_image(png, is_photo_figure(key))[1]).decode()


def test_report_has_the_ablation_first_after_the_replication_table(multi):
    out, _ = multi
    h, m = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "## 2 Every change against the baseline" in m and "## 3 Summary" in m
    assert h.index('<section id="replication">') < h.index('<section id="ablation">') < h.index(
        '<section id="summary">')
    s = _load(out)
    for r in s["ablation"]["rows"]:
        sentence = describe_ablation_row(r, s["ablation"])
        assert md_escape(sentence) in m
        assert "Holm-adjusted over 2 changes" in sentence
        assert fmt_p(r["p_holm"]) in sentence
    # the second change's tracking figure is embedded in the ablation section
    png = (out / "figures/gradcam_tracking_label_smoothing=0.0.png").read_bytes()
    sec = h[h.index('<section id="ablation">'):h.index('<section id="summary">')]
    assert _embedded(png, "gradcam_tracking_x") in sec
    assert "data:image/jpeg" in sec  # a photo grid like the first change's tracking figure
    # with the second change's tracked failures said in numbers, its own base rate included
    sentence = describe_tracking(s["variants"][1]["failures"]["tracking"])
    assert str(escape(sentence)) in sec  # escaped as jinja escapes (quotes as &#34;)
    first = describe_tracking(s["variants"][0]["failures"]["tracking"])
    if first != sentence:  # the first change's tracking is in its own section, not here
        assert str(escape(first)) not in sec


def test_progress_counts_runs_and_gives_an_eta(multi):
    _, lines = multi
    counts = [ln for ln in lines if re.match(r"\[\d/6 runs\]", ln)]
    assert counts[0] == "[0/6 runs] 6 to train and evaluate; time left known after the first"
    assert re.match(r"\[1/6 runs\] baseline seed 0 done in .*; 5 left, about .* left", counts[1])
    assert counts[-1].startswith("[6/6 runs]") and counts[-1].endswith("all runs done")


def test_run_figures_are_frozen_for_the_report(multi):
    """An ad-hoc analysis rewrites a run's figure; the study's report keeps its own copy."""
    out, _ = multi
    s = _load(out)
    assert not any(f.startswith("runs/") for f in s["figures"].values())
    gallery = out / s["figures"]["failure_gallery"]
    before = gallery.read_bytes()
    run_fig = out / "runs/baseline-s0/figures/failures_test.png"
    assert run_fig.read_bytes() == before  # a copy of the run's figure at summary time
    other = (out / "figures/curves.png").read_bytes()
    assert other != before
    run_fig.write_bytes(other)  # what `cifarlens failures RUN --top 6` does to it
    render_report(out)
    html = (out / "report.html").read_text()
    assert _embedded(before, "failure_gallery") in html
    # the curves figure appears once, as itself: the rewritten run figure is not embedded
    assert html.count(_embedded(other, "curves")) == 1
    assert _embedded(other, "failure_gallery") not in html


def test_adding_a_change_trains_only_the_new_variant(multi, tmp_path):
    import shutil

    src, _ = multi
    out = tmp_path / "s"
    shutil.copytree(src, out)
    data_dir = json.loads((out / "study.json").read_text())["baseline"]["data_dir"]
    kept = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")}
    lines: list[str] = []
    s = run_study(out, preset="smoke", seeds=2, changes=[*CHANGES, "weight_decay=1e-3"],
                  options=StudyOptions(failures_top=3), overrides={**OVERRIDES, "data_dir": data_dir},
                  engine=LocalEngine(progress=False), log=lines.append)
    s = to_json(s)  # the summary as summary.json holds it
    assert any("adding weight_decay=0.001" in ln for ln in lines)
    assert "[6/8 runs] 2 to train and evaluate; time left known after the first" in lines
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")
            if p.parent.name in kept} == kept
    assert (out / "runs/weight_decay=0.001-s1/done.json").is_file()
    assert [r["change"] for r in s["ablation"]["rows"]] == [
        "augment=crop-flip", "label_smoothing=0.0", "weight_decay=0.001"]
    assert s["ablation"]["m"] == 3
    # naming only a subset (or none) keeps every recorded change: nothing is dropped
    s2 = run_study(out, preset="smoke", seeds=2, changes="label_smoothing=0",
                   options=StudyOptions(failures_top=3),
                   overrides={**OVERRIDES, "data_dir": data_dir}, engine=LocalEngine(progress=False),
                   log=lambda m: None)
    s2 = to_json(s2)  # the summary as summary.json holds it
    assert len(s2["variants"]) == 3
    # a different baseline is refused in one line listing the differences; nothing deleted
    before = sorted(p.name for p in (out / "runs").iterdir())
    with pytest.raises(CifarlensError) as e:
        run_study(out, preset="smoke", seeds=2, changes=["lr=0.1"],
                  overrides={**OVERRIDES, "data_dir": data_dir, "epochs": 2, "momentum": 0.8},
                  engine=LocalEngine(progress=False), log=lambda m: None)
    msg = str(e.value)
    assert "another baseline" in msg and "epochs 1 vs 2" in msg and "momentum 0.9 vs 0.8" in msg
    assert "\n" not in msg
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    # the CLI resumes it with its recorded changes and prints one line per change
    cmd = [sys.executable, "-m", "cifarlens", "study", "--preset", "smoke", "--seeds", "2",
           "--out", str(out), "--data-dir", data_dir, "--dataset", "cifar10", "--epochs", "1",
           "--train-limit", "500", "--device", "cpu", "--top", "3", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    printed = r.stdout.splitlines()
    assert printed[-1].startswith("report: ")
    lines = ablation_lines(read_summary(out / "summary.json"))
    # after the headline, before the measured time and the path
    assert len(lines) == 3 and printed[-5:-2] == lines and printed[-2].startswith("time: ")
    assert [ln.split(" ")[0] for ln in lines] == ["augment:", "label_smoothing:", "weight_decay:"]


# --- the report's ablation sentences on constructed rows ------------------------------------------


AB = {"m": 3, "alpha": 0.05, "covers": "training seeds and test-image sampling",
      "method": "paired t-test across 3 seeds per change, Holm over 3 changes"}


# the ablation block's other fields, as the study writes them
AB_FIXED = {"test": "paired_t", "correction": "holm", "level": 0.95,
            "per_seed_covers": "test-image sampling only"}


def _row(verdict, diff, lo, hi, p, ph, key="augment", value="crop-flip"):
    return {"change": f"{key}={value}", "key": key, "slug": f"{key}={value}",
            "baseline_value": "none", "variant_value": value, "before": 0.60,
            "after": 0.60 + diff, "diff": diff, "lo": lo, "hi": hi, "p": p, "p_holm": ph,
            "verdict": verdict, "n_seeds": 3,
            "per_seed_mcnemar": [
                {"seed": 0, "p_value": 0.01, "diff": None, "lo": None, "hi": None, "a_only": 1,
                 "b_only": 2},
                {"seed": 1, "p_value": 0.2, "diff": None, "lo": None, "hi": None, "a_only": 2,
                 "b_only": 1}]}


def test_ablation_sentence_says_the_decision_with_the_correction():
    """A row is judged by power.decide with its Holm p (a row from before the decision record:
    on the SD its t interval implies), and says the correction, the noise and the power."""
    helped = describe_ablation_row(_row("helped", 0.05, 0.03, 0.07, 0.004, 0.012), AB)
    assert helped.startswith("augment: none → crop-flip: across 3 seeds, the mean test accuracy "
                             "rose by 5.00 points from 60.00% to 65.00% (95% CI [3.00, 7.00]; "
                             "paired t-test, 2 degrees of freedom, p = 0.0085; Holm-adjusted "
                             "over 3 changes p = 0.012; the interval covers training seeds")
    assert "): the change helped; with 3 seeds this study could detect" in helped
    hurt = describe_ablation_row(_row("hurt", -0.05, -0.07, -0.03, 0.004, 0.012), AB)
    assert "fell by 5.00 points from 60.00% to 55.00%" in hurt and "the change hurt" in hurt
    # the interval excludes 0 but not after Holm: not decided, and the sentence says why
    same = describe_ablation_row(_row("no detectable difference", 0.02, 0.001, 0.04, 0.03,
                                      0.09), AB)
    assert ("not decided, as the interval excludes 0, but the Holm-adjusted p is not below 5%, "
            "and it reaches beyond ±1 point") in same
    assert "Holm-adjusted over 3 changes p = 0.090" in same
    assert "helped" not in same and "hurt" not in same
    # the row's own decision record wins
    rec = decide([0.001, 0.002, 0.0015], 0.01, p_adjusted=0.5).as_dict()
    eq = describe_ablation_row({**_row("x", 0.0015, None, None, None, 0.5), "decision": rec}, AB)
    assert "the change is equivalent within ±1 point" in eq
    one = describe_ablation_row({**_row("not tested", 0.02, None, None, None, None),
                                 "n_seeds": 1}, AB)
    assert "for one trained pair" in one and "nothing is concluded" in one
    assert "CI" not in one and "helped" not in one


def test_ablation_section_rendered_and_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    rows = [_row("helped", 0.05, 0.03, 0.07, 0.004, 0.012),
            _row("no detectable difference", 0.0, -0.02, 0.02, 0.9, 0.9, key="model", value=evil)]
    base = summary_json()
    first = base["variants"][0]
    second = {**copy.deepcopy(first), "slug": "model=x",
              "change": {"key": "model", "baseline": "small", "variant": evil},
              "figures": {"gradcam_tracking": "figures/missing.png"}}
    s = summary_json(ablation={**AB, **AB_FIXED, "m": 2, "rows": rows},
                     variants=[first, second])
    h, m = (p.read_text() for p in render_report(tmp_path, summary_from_json(s)))
    assert '<section id="ablation">' in h and "## 2 Every change against the baseline" in m
    assert evil not in h and "&lt;script&gt;" in h
    assert "Holm, 2 changes" in h and "s0: 0.010, s1: 0.20" in h
    assert "figures/missing.png" in h.split('<section id="ablation">')[1].split("</section>")[0]
    # the same summary without an ablation: no such section, numbering as in a one-change study
    h1, m1 = (p.read_text() for p in render_report(tmp_path, summary_from_json(summary_json())))
    assert '<section id="ablation">' not in h1 and "## 2 Summary" in m1


def test_resume_without_change_uses_the_recorded_changes(tmp_path):
    """A baseline that already has crop-flip resumes its lr study without --change: the default
    change (augment=crop-flip) must not be checked against it."""
    from cifarlens.study.plan import merge_study

    overrides = {"augment": "crop-flip", "data_dir": str(tmp_path / "no-data")}
    plan, _ = plan_study("smoke", seeds=1, overrides=overrides, changes=["lr=0.1", "epochs=2"])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(json.dumps(plan))
    merged, arms, added = merge_study(tmp_path / "s", plan, "smoke", 1, overrides, None, None)
    assert added == [] and list(arms) == ["baseline", "lr=0.1", "epochs=2"]
    assert merged["changes"] == plan["changes"]
    # through run_study it gets as far as the (missing) data, not to the guard
    with pytest.raises(CifarlensError) as e:
        run_study(tmp_path / "s", preset="smoke", seeds=1, overrides=overrides,
                  engine=LocalEngine(progress=False), log=lambda m: None)
    assert "exactly one" not in str(e.value) and "no-data" in str(e.value)


def test_a_one_change_study_from_before_gains_a_second_change(multi, tmp_path, synth10):
    """An existing one-change study (runs/variant-sN, a study.json without "changes") gets a
    second change: its runs keep their names and are reused; with one seed the ablation reports
    the numbers and concludes nothing."""
    import shutil

    src, _ = multi
    out = tmp_path / "s"
    ov = {**OVERRIDES, "data_dir": str(synth10)}
    # the seed-0 baseline and crop-flip runs, laid out as a one-change study from before
    for name, new in (("baseline-s0", "baseline-s0"), ("augment=crop-flip-s0", "variant-s0")):
        shutil.copytree(src / "runs" / name, out / "runs" / new)
    study, _ = plan_study("smoke", "augment=crop-flip", 1, ov)
    for k in ("changes", "variants"):  # what a study.json written before this looked like
        del study[k]
    (out / "study.json").write_text(json.dumps(study))
    kept = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")}
    assert sorted(kept) == ["baseline-s0", "variant-s0"]
    s = run_study(out, preset="smoke", seeds=1, changes="lr=0.1",
                  options=StudyOptions(failures_top=2), overrides=ov,
                  engine=LocalEngine(progress=False), log=lambda m: None)
    s = to_json(s)  # the summary as summary.json holds it
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")
            if p.parent.name in kept} == kept
    assert [v["slug"] for v in s["variants"]] == ["variant", "lr=0.1"]
    assert s["variants"][0]["change"]["key"] == "augment"  # the first change stays the one-change keys' change
    rows = s["ablation"]["rows"]
    assert [r["verdict"] for r in rows] == ["not tested", "not tested"]
    assert [r["p"] for r in rows] == [None, None] and [r["p_holm"] for r in rows] == [None, None]
    acc = [_top1(out / "runs" / n).mean() for n in ("baseline-s0", "variant-s0", "lr=0.1-s0")]
    assert [r["diff"] for r in rows] == pytest.approx([acc[1] - acc[0], acc[2] - acc[0]])
    render_report(out)
    md = (out / "report.md").read_text()
    assert md.count("nothing is concluded about this change") == 2
    assert json.loads((out / "study.json").read_text())["changes"][0]["slug"] == "variant"


def test_only_the_first_seed_draws_run_figures(multi):
    """The report embeds the first seed's run figures; the other seeds skip drawing (most of
    evaluate's time) but keep their predictions and metrics."""
    out, _ = multi
    for arm in ("baseline", "augment=crop-flip", "label_smoothing=0.0"):
        first, second = out / "runs" / f"{arm}-s0", out / "runs" / f"{arm}-s1"
        assert (first / "figures" / "confusion_test.png").is_file(), arm
        assert not (second / "figures" / "confusion_test.png").exists(), arm
        assert (second / "predictions_test.npz").is_file()
        assert (second / "metrics_test.json").is_file()
