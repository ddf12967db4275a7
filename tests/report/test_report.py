"""report.py: both outputs complete, numbers consistent, sentences generated, output safe."""

from __future__ import annotations

import base64
import copy
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from summaries import FIGURE_KEYS, make_summary

from cifarlens.analysis import metrics as M
from cifarlens.errors import CifarlensError  # noqa: E402
from cifarlens.report.blocks import gh_slug
from cifarlens.report.constants import COLLAPSED, SECTIONS
from cifarlens.report.first_screen import headline
from cifarlens.report.formats import (
    fmt_auc,
    fmt_float,
    fmt_flops,
    fmt_int,
    fmt_p,
    fmt_params_m,
    fmt_pct,
    fmt_points,
    md_escape,
    p_clause,
)
from cifarlens.report.render import render_report
from cifarlens.report.sections import SECTION_BUILDERS, describe_confident_errors, describe_cost
from cifarlens.report.sentences import (
    MCE_MIN_COUNT,
    change_verdict,
    describe_border,
    describe_change,
    describe_faithfulness,
    describe_mce,
    describe_temperature,
    describe_tracking,
    recipe_rows,
)
from cifarlens.report.verdict_blocks import superclass_text
from cifarlens.report.verdicts import describe_seeds
from cifarlens.study.schema import read_summary, summary_from_json


def write_png(path: Path, color: str = "C0") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=60)
    ax.plot([0, 1, 2], [0, 1, 0.5], color=color)
    ax.set_title(path.stem, fontsize=7)
    fig.savefig(path, format="png")
    plt.close(fig)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One tiny real PNG per figure key, rendered once (matplotlib is the slow part)."""
    d = tmp_path_factory.mktemp("pngs")
    out = {}
    for i, k in enumerate(FIGURE_KEYS):
        write_png(d / f"{k}.png", f"C{i % 10}")
        out[k] = (d / f"{k}.png").read_bytes()
    return out


def make_study(tmp_path: Path, pngs: dict[str, bytes], summary: dict[str, Any] | None = None,
               ) -> tuple[Path, dict[str, Any]]:
    study = tmp_path / "study"
    (study / "figures").mkdir(parents=True)
    for k, data in pngs.items():
        (study / "figures" / f"{k}.png").write_bytes(data)
    summary = make_summary() if summary is None else summary
    (study / "summary.json").write_text(json.dumps(summary))
    return study, summary


def render(tmp_path: Path, pngs: dict[str, bytes], summary: dict[str, Any] | None = None,
           ) -> tuple[str, str, Path]:
    study, summary = make_study(tmp_path, pngs, summary)
    h, m = render_report(study)
    return h.read_text(encoding="utf-8"), m.read_text(encoding="utf-8"), study


def in_html(s: str, doc: str) -> bool:
    return html.escape(s, quote=True) in doc or html.escape(s, quote=False) in doc


def in_md(s: str, doc: str) -> bool:
    return md_escape(s) in doc


# --------------------------------------------------------------------------- structure


def test_every_section_heading_in_both(tmp_path, pngs):
    h, m, _ = render(tmp_path, pngs)
    # the ablation section exists only with 2+ changes (tests/study/test_ablation.py), the
    # data side only where the summary has it (tests/report/test_neighbours_report.py),
    # robustness only with study --robustness (tests/report/test_report_robustness.py)
    optional = ("ablation", "data-side", "robustness")
    for i, (sid, title) in enumerate([x for x in SECTIONS if x[0] not in optional], 1):
        opened = "" if sid in COLLAPSED else " open"
        assert re.search(rf'<section id="{sid}">\s*<details{opened}>\s*<summary><h2>{i} '
                         rf'{re.escape(html.escape(title))}</h2></summary>', h), title
        assert f"\n## {i} {md_escape(title)}\n" in m, title
        # the TOC links to each section in both formats
        assert f'href="#{sid}"' in h
        assert f"(#{gh_slug(f'{i} {title}')})" in m
    assert gh_slug("12 Comparison & statistics") == "12-comparison--statistics"
    assert len(SECTIONS) == 18 and SECTIONS[0][0] == "replication"  # the report opens with it
    assert SECTIONS[1][0] == "ablation"  # then, with 2+ changes, every change's verdict


def rendered_numbers(s: dict[str, Any]) -> list[str]:
    """Every number we check, formatted exactly as the report formats it."""
    b, v = s["models"]["baseline"], s["models"]["variant"]
    c = s["comparison"]
    acc, mc = c["accuracy_difference"], c["mcnemar"]
    out = []
    for m in (b, v):
        t = m["test"]
        out += [fmt_pct(t[k]) for k in ("top1", "top5", "macro_f1", "ece", "mce")]
        out += [fmt_pct(m["val"][k]) for k in ("top1", "top5", "macro_f1", "ece")]
        out += [fmt_float(t["loss"]), fmt_float(m["val"]["loss"]), fmt_float(t["brier"])]
        cal = m["calibration"]
        out += [fmt_float(cal["temperature"], 2), fmt_pct(cal["ece_after"]),
                fmt_float(cal["nll_after"]), fmt_float(cal["nll_before"])]
        out += [fmt_int(m["params"]), fmt_params_m(m["params"]), fmt_flops(m["flops"])]
        sc = t["superclass"]
        out += [fmt_pct(sc[k]) for k in ("coarse_accuracy", "within_superclass_share",
                                           "chance_share")]
    out += [fmt_points(acc["diff"]), fmt_points(acc["lo"]), fmt_points(acc["hi"]),
            fmt_points(acc["se"])]
    out += [fmt_int(mc[k]) for k in ("n", "both_right", "both_wrong", "a_only", "b_only")]
    out.append(fmt_p(mc["p_value"]))
    for x in c["per_class"]["improved"] + c["per_class"]["worsened"]:
        out += [x["name"], fmt_pct(x["before"]), fmt_pct(x["after"]),
                fmt_points(x["delta"], signed=True)]
    f = s["failures"]
    out += [fmt_int(f[k]) for k in ("total_wrong", "confident_wrong", "label_error_suspects")]
    for x in f["top"]:
        out += [x["true_name"], x["pred_name"], str(x["index"]), fmt_pct(x["confidence"]),
                fmt_pct(x["margin"]), fmt_pct(x["true_prob"]),
                x["variant"]["pred_name"], fmt_pct(x["variant"]["confidence"]),
                fmt_pct(x["variant"]["true_prob"])]
    e = s["explain"]
    for v_ in e["faithfulness"].values():
        out += [fmt_auc(v_["deletion_auc"]), fmt_auc(v_["insertion_auc"])]
    out += [fmt_pct(e["border_share"][k]) for k in ("failures", "correct", "uniform")]
    out += [fmt_pct(e["pointing_game"]["hit_rate"])]
    out += [fmt_float(x, 4) for x in s["normalization"]["mean"] + s["normalization"]["std"]]
    out += [fmt_int(s["split"][k]) for k in ("train", "val", "test")]
    return out


def test_every_number_appears_formatted_in_both(tmp_path, pngs):
    h, m, _ = render(tmp_path, pngs)
    s = make_summary()
    missing_h = [x for x in rendered_numbers(s) if not in_html(x, h)]
    missing_m = [x for x in rendered_numbers(s) if not in_md(x, m)]
    assert not missing_h and not missing_m, (missing_h, missing_m)
    # The formatters themselves, pinned to literal strings (a formatter bug cannot hide).
    for literal in ("62.91%", "69.54%", "6.63", "[5.80, 7.46]", "3.1e-12", "1,154", "491",
                    "1.41", "94.50%", "60.12%", "10,462,756", "0.65 GFLOPs", "+20.00", "-10.00"):
        assert literal in h, literal
        assert literal in m.replace("\\[", "[").replace("\\]", "]"), literal
    # the tracked outcomes, one per status
    for status in ("fixed", "still wrong", "other wrong class"):
        assert f'<td class="tag">{status}</td>' in h, status  # a label: never wrapped
        assert f"| {status} |" in m or f"| **{status}** |" in m, status  # fixed: highlighted


@pytest.mark.parametrize(("p", "text"), [
    (0.0, "< 1e-300"), (3.1e-12, "3.1e-12"), (3e-12, "3.0e-12"), (0.41, "0.41"),
    (0.05, "0.050"), (0.0996, "0.10"), (1.0, "1.0"), (0.0012, "0.0012"), (0.00099, "9.9e-04"),
    (float("nan"), "n/a"), (None, "n/a"), (1.5, "n/a"), ("0.3", "n/a"),
])
def test_fmt_p(p, text):
    assert fmt_p(p) == text


def test_number_formats():
    assert fmt_pct(0.6291) == "62.91%"
    assert fmt_pct(None) == "n/a" and fmt_pct(True) == "n/a"
    assert fmt_points(0.0663) == "6.63" and fmt_points(-0.0001, signed=True) == "-0.01"
    assert fmt_points(-0.00001, signed=True) == "0.00"
    assert fmt_flops(650612736) == "0.65 GFLOPs" and fmt_flops(5_300_000) == "5.30 MFLOPs"
    assert p_clause(0) == "p < 1e-300" and p_clause(0.41) == "p = 0.41"


# --------------------------------------------------------------------------- sentences


def test_describe_change_positive_significant():
    s = describe_change(0.0663, (0.059, 0.074), 3.1e-12)
    assert s == ("test accuracy rose by 6.63 points (95% CI [5.90, 7.40]); McNemar's exact "
                 "test p = 3.1e-12, significant at the 5% level")
    assert change_verdict(0.0663, 0.059, 0.074, 3.1e-12) == "rose"


def test_describe_change_negative_significant():
    s = describe_change(-0.021, (-0.03, -0.012), 0.0004)
    assert s.startswith("test accuracy fell by 2.10 points (95% CI [-3.00, -1.20])")
    assert "p = 4.0e-04, significant at the 5% level" in s
    assert "rose" not in s and "not" not in s


def test_describe_change_ci_crossing_zero():
    s = describe_change(0.004, (-0.003, 0.011), 0.41)
    assert s.startswith("test accuracy did not change significantly")
    assert "difference +0.40 points" in s and "[-0.30, 1.10]" in s and "p = 0.41" in s
    assert "rose" not in s and "fell" not in s
    # same CI but a negative estimate: still not significant, still no direction word
    s = describe_change(-0.004, (-0.011, 0.003), 0.41)
    assert "did not change significantly" in s and "difference -0.40 points" in s


def test_describe_change_edge_cases():
    # p and CI disagree -> borderline, never "significant at"
    s = describe_change(0.01, (-0.001, 0.021), 0.03)
    assert "borderline" in s and "rose by 1.00 points" in s and "includes 0" in s
    assert change_verdict(0.01, -0.001, 0.021, 0.03) == "borderline"
    s = describe_change(0.01, (0.001, 0.021), 0.07)
    assert "borderline" in s and "excludes 0" in s
    # alpha moves the decision
    assert change_verdict(0.01, 0.001, 0.021, 0.03, alpha=0.01) == "borderline"
    # a difference that shows as 0.00 points is never called a rise
    assert "did not change" in describe_change(0.00001, (0.000005, 0.00002), 1e-9)
    # only the CI available / nothing available
    assert "rose by 2.00 points" in describe_change(0.02, (0.01, 0.03), None)
    assert "unknown" in describe_change(0.02, (None, None), None)
    assert "not computed" in describe_change(None, (None, None), None)
    assert "from 62.91% to 69.54%" in describe_change(0.0663, (0.05, 0.08), 1e-9,
                                                        means=(0.6291, 0.6954))


def test_other_sentences_follow_the_numbers():
    t = describe_temperature("baseline", {"temperature": 1.4, "ece_before": 0.06,
                                            "ece_after": 0.02})
    assert "overconfident" in t and "lowered test ECE from 6.00% to 2.00%" in t
    t = describe_temperature("baseline", {"temperature": 0.8, "ece_before": 0.02,
                                            "ece_after": 0.03})
    assert "underconfident" in t and "raised test ECE" in t
    # no test, no conclusion (old summaries)
    b = describe_border({"failures": 0.55, "correct": 0.48, "uniform": 0.61})
    assert "numbers only" in b and "more" not in b and "background reliance" in b
    good = {"gradcam": {"deletion_auc": 0.2, "insertion_auc": 0.6},
            "random": {"deletion_auc": 0.3, "insertion_auc": 0.4}}
    t = describe_faithfulness(good)
    assert "do not show" in t and "do point at evidence" not in t
    assert "fixed 2 (50.00%)" in describe_tracking({"tracked": 4, "fixed": 2,
                                                      "still_wrong": 1, "other_wrong": 1})


def test_superclass_sentence_concludes_only_from_the_clustered_test():
    """A binomial p (errors treated as independent) is never a conclusion; the cluster
    bootstrap by true class is (issue 22)."""
    from cifarlens.study.schema import Superclass, from_json

    base = {"coarse_accuracy": 0.5, "chance_share": 4 / 99, "errors": 336,
            "errors_within_superclass": 60, "within_superclass_share": 60 / 336,
            "binomial_p": 1e-25, "share_ci": [0.14, 0.22]}
    old = superclass_text("baseline", from_json(Superclass, base))
    assert "nothing is concluded" in old and "favour" not in old
    cluster = {"errors": 336, "errors_within_superclass": 60, "decision": "not distinguishable",
               "level": 0.95, "n_boot": 10000, "clusters": 100, "clusters_with_errors": 90,
               "method": "m", "covers": "c", "share": 60 / 336, "chance_share": 4 / 99,
               "diff": 60 / 336 - 4 / 99, "share_ci": [0.03, 0.40], "diff_ci": [-0.01, 0.36]}
    wide = superclass_text("baseline", from_json(Superclass, {**base, "cluster": cluster}))
    assert "not distinguishable from chance" in wide and "favour" not in wide
    assert "cluster bootstrap over 100 true classes" in wide
    strong = superclass_text("baseline", from_json(Superclass, {**base, "cluster": {
        **cluster, "decision": "above chance", "diff_ci": [0.08, 0.2]}}))
    assert "errors favour related classes, 4.4× as often as chance" in strong


def test_report_sentences_flip_with_the_data(tmp_path, pngs):
    s = make_summary()
    s["comparison"]["accuracy_difference"].update(diff=-0.0312, lo=-0.04, hi=-0.022)
    s["comparison"]["mcnemar"]["p_value"] = 2e-5
    s["models"]["variant"]["test"]["ece"] = 0.09
    h, m, _ = render(tmp_path, pngs, s)
    for doc in (h, m):
        # one seed: the pair's result, said as such, and no claim about the change
        assert "fell by 3.12 points" in doc and "for one trained model per arm (seed 0)" in doc
        assert "not yet evidence about the setting" in doc and "--seeds 3" in doc
        assert "Nothing is concluded about the change yet" in doc
        assert "The change hurt" not in doc and "The change helped" not in doc
        # one pair's ECE gap is numbers, never "worse calibrated" (issue 22)
        assert "calibrated" not in doc.replace("equally calibrated", "") or \
            "One pair of models is not a test of calibration" in doc
        assert "worse calibrated" not in doc and "rose by" not in doc
    # the default fixture says the opposite
    h2, _, _ = render(tmp_path / "again", pngs)
    assert "rose by 6.63 points" in h2 and "better calibrated" not in h2
    # with seeds, the seed-level verdict decides the reflection's lead
    s3 = _three_seeds(make_summary(), mean_diff=-0.031, ci=[-0.045, -0.017])
    h3, m3, _ = render(tmp_path / "seeds", pngs, s3)
    for doc in (h3, m3):
        assert "The change hurt: with augment: none → crop-flip, across 3 seeds" in doc.replace(
            "&gt;", ">").replace("\\", "")


def _three_seeds(s: dict[str, Any], *, mean_diff: float, ci: list[float] | None = None,
                 n: int = 3, sd: float = 0.01, note: str | None = None) -> dict[str, Any]:
    """A summary with an n-seed block as study writes it (seed 0 stays the fixture's pair):
    the SD of the differences from `ci` when given (the paired t interval it is), and the
    interval and p from the SD, so the block is consistent."""
    from scipy import stats as sps

    tq = sps.t.ppf(0.975, n - 1)
    if ci is not None:
        sd = (ci[1] - ci[0]) / 2 / tq * n ** 0.5
    se = sd / n ** 0.5
    p = float(2 * sps.t.sf(abs(mean_diff) / se, n - 1)) if sd > 0 else None
    ci = [mean_diff - tq * se, mean_diff + tq * se] if sd > 0 else [None, None]
    s["seeds"] = list(range(n))
    s["comparison"]["seeds"] = {
        "n": n, "mean_a": 0.6301, "std_a": 0.0102, "mean_b": 0.6301 + mean_diff,
        "std_b": 0.0087, "mean_diff": mean_diff, "std_diff": sd, "df": n - 1, "p_value": p,
        "ci": ci, "level": 0.95, "method": "paired_t", "note": note,
        "covers": "training seeds and test-image sampling",
        "mcnemar_per_seed": [{"seed": i, "diff": 0.0663, "lo": 0.058, "hi": 0.0746,
                              "a_only": 491, "b_only": 1154, "p_value": 3.1e-12}
                             for i in range(n)]}
    s["comparison"]["pair_seed"], s["comparison"]["verdict_basis"] = 0, "seeds"
    return s


def _text(doc: str) -> str:
    """A rendered document as plain text: HTML entities and Markdown escapes undone."""
    return html.unescape(doc).replace("\\[", "[").replace("\\]", "]").replace("\\_", "_")


def test_one_verdict_from_the_seed_level_test_everywhere(tmp_path, pngs):
    """The reported bug: seed 0's McNemar says 'rose ... significant' while the t-test across
    3 seeds does not. Every verdict word must come from the seed-level decision, with the
    power it had (issue 22: "not decided", not "no significant difference")."""
    s = _three_seeds(make_summary(), mean_diff=0.004, ci=[-0.012, 0.020])
    h, m, _ = render(tmp_path, pngs, s)
    for doc in map(_text, (h, m)):
        assert "rose by" not in doc and "significant at the 5% level" not in doc
        assert "The change helped" not in doc and "no significant difference" not in doc
        # first screen, summary, constrained improvement, comparison (twice), reflection
        assert doc.lower().count("across 3 seeds, the mean test accuracy changed by +0.40 "
                                 "points") >= 5
        assert "Not decided with 3 seeds" in doc
        assert "not decided, as the interval holds 0 and it reaches beyond ±1 point" in doc
        assert "with 3 seeds this study could detect changes of about" in doc
        assert "paired t-test, 2 degrees of freedom, p = 0.39" in doc
        # seed 0's McNemar is still there, as labelled supporting detail, without a verdict
        assert "For the seed-0 pair alone the difference is +6.63 points" in doc
        assert "McNemar's exact test: p = 3.1e-12." in doc
        # which noise each interval covers
        assert "The seed-level interval and test cover training seeds" in doc
        assert "test-image sampling only, for one pair of trained models" in doc
    # and a significant seed-level result is said once, the same way, everywhere
    s = _three_seeds(make_summary(), mean_diff=0.0611, ci=[0.0511, 0.0711])
    h, m, _ = render(tmp_path / "sig", pngs, s)
    for doc in map(_text, (h, m)):
        assert doc.lower().count("across 3 seeds, the mean test accuracy rose by 6.11 "
                                 "points") >= 5
        assert "The change helped" in doc and "not decided" not in doc


def test_an_interval_within_the_margin_reads_equivalent(tmp_path, pngs):
    s = _three_seeds(make_summary(), mean_diff=0.0005, ci=[-0.002, 0.003])
    h, _, _ = render(tmp_path, pngs, s)
    doc = _text(h)
    assert "The change made no difference beyond ±1 point" in doc
    assert "the change is equivalent within ±1 point" in doc


def test_two_seeds_name_the_single_degree_of_freedom(tmp_path, pngs):
    s = _three_seeds(make_summary(), mean_diff=0.03, ci=[-0.2, 0.26], n=2)
    h, m, _ = render(tmp_path, pngs, s)
    for doc in map(_text, (h, m)):
        assert "paired t-test, 1 degree of freedom" in doc
        assert "With 2 seeds the t-test has 1 degree of freedom" in doc


def test_a_constant_seed_difference_is_not_a_verdict(tmp_path, pngs):
    s = _three_seeds({**make_summary(), "data_source": "official"}, mean_diff=0.02, sd=0.0,
                     note="the difference is identical for every seed")
    h, _, _ = render(tmp_path, pngs, s)
    doc = _text(h)
    assert "nothing about the change is tested" in doc and "identical for every seed" in doc
    assert "The change's effect was not tested" in doc and "Not judged" in doc


def test_replication_table_against_constructed_studies(tmp_path, pngs):
    real = {"data_source": "official"}
    cases = [  # (mean diff, CI, the sentence's start)
        (0.0663, [0.0603, 0.0723], "Reproduced: this study's 95% CI across 3 seeds [6.03, 7.23] "
                                   "lies within ±1 point of the seed's +6.63 points"),
        (0.0611, [0.0511, 0.0711], "Consistent with the seed's +6.63 points: this study's 95% "
                                   "CI across 3 seeds [5.11, 7.11] holds them and excludes 0"),
        (0.09, [0.08, 0.10], "Exceeded: this study's whole 95% CI across 3 seeds [8.00, 10.00]"),
        (0.03, [0.02, 0.04], "Smaller: the change helps"),
        (-0.003, [-0.02, 0.014], "Not reproduced: this study's 95% CI across 3 seeds "
                                 "[-2.00, 1.40] lies below the seed's +6.63 points and holds 0"),
        (-0.03, [-0.05, -0.01], "Not reproduced: this study's 95% CI across 3 seeds "
                                "[-5.00, -1.00] lies wholly below 0: it shows a loss"),
        (0.03, [-0.01, 0.07], "Not decided: this study's 95% CI across 3 seeds [-1.00, 7.00]"),
    ]
    for i, (d, ci, want) in enumerate(cases):
        s = _three_seeds({**make_summary(), **real}, mean_diff=d, ci=ci)
        h, m, _ = render(tmp_path / str(i), pngs, s)
        for doc in map(_text, (h, m)):
            assert want in doc, (want, doc[:3000])
            head = doc[doc.rindex("Seed report side by side"):doc.rindex("Headline.")]
            for x in ("62.91%", "69.54%", "+6.63", "10,462,756", "0.65 GFLOPs",
                      fmt_pct(0.6301), fmt_pct(0.6301 + d), fmt_points(d, signed=True)):
                assert x in head, x
    # one seed: numbers side by side, no judgement
    h, _, _ = render(tmp_path / "one", pngs, {**make_summary(), **real})
    assert "Not judged: the study has no seed-level interval" in _text(h)
    assert "one trained pair" in _text(h)


@pytest.mark.parametrize(("edit", "why"), [
    ({}, "the study ran on generated data, not CIFAR-100"),
    ({"data_source": "official", "dataset": "cifar10"}, "the dataset is cifar10, not CIFAR-100"),
    ({"data_source": "official",
      "change": {"key": "label_smoothing", "baseline": 0.1, "variant": 0.0}},
     "the change is label_smoothing: 0.1 → 0, not the seed's augment: none → crop-flip"),
    ({"data_source": "official", "config": {**make_summary()["config"], "model": "small"}},
     "the model is small, not the seed's baseline CNN"),
    ({"data_source": "official", "config": {**make_summary()["config"], "epochs": 10,
                                            "train_limit": 10000}},
     "the number of epochs is 10, not the seed's 50; it trained on a 10000-image subset"),
    ({"data_source": "official", "config": {**make_summary()["config"], "lr": 0.1}},
     "the learning rate is 0.1, not 0.05, the value cifarlens reproduces the seed with"),
    ({"data_source": "official", "config": {**make_summary()["config"], "batch_size": 64}},
     "the batch size is 64, not the seed's 128"),
    ({"data_source": "official", "config": {}},
     "the study does not record its training settings"),
    ({"data_source": "official", "environment": {"device": "cpu"}},
     "the study does not record its precision"),
])
def test_replication_does_not_apply_and_says_why(tmp_path, pngs, edit, why):
    s = _three_seeds({**make_summary(), **edit}, mean_diff=0.0663, ci=[0.0603, 0.0723])
    h, m, _ = render(tmp_path, pngs, s)
    for doc in map(_text, (h, m)):
        assert "The comparison with the seed report does not apply: " in doc
        assert why in doc, why
        assert "Reproduced" not in doc and "Exceeded" not in doc


def test_recipe_table_reads_the_config_and_is_in_the_readme():
    from dataclasses import asdict

    from cifarlens.training.config import make_config

    rows = recipe_rows(asdict(make_config("paper")), "bf16 where the hardware has it, else "
                         "fp32 (auto)", 3)
    used = {r[0]: r[2] for r in rows}
    assert used["Peak learning rate"] == "0.05" and used["Warm-up"].startswith("1 epoch")
    assert used["Weight decay"] == "0.0005 on conv and linear weights, not on BN or bias"
    assert used["Loss"] == "cross-entropy, label smoothing 0.1"
    assert "no Nesterov" in used["Optimizer"] and "last partial batch dropped" in used[
        "Batch size"]
    assert used["Seeds"] == "3 per arm, paired by seed"
    # a study's own config shows what it ran, not the preset
    assert {r[0]: r[2] for r in recipe_rows({"lr": 0.1}, "fp32")}["Peak learning rate"] == "0.1"
    doc = (Path(__file__).resolve().parents[2] / "docs" / "study.md").read_text()
    for r in rows:  # docs/study.md's table is this table (no drift)
        assert "| " + " | ".join(r) + " |" in doc, r


def test_multi_seed_block_rendered(tmp_path, pngs):
    s = make_summary()
    s["seeds"] = [0, 1, 2]
    s["comparison"]["seeds"] = {"n": 3, "mean_a": 0.6301, "std_a": 0.0102, "mean_b": 0.6912,
                                "std_b": 0.0087, "mean_diff": 0.0611, "std_diff": 0.004025,
                                "p_value": 0.0013, "ci": [0.0511, 0.0711], "note": None}
    for name, accs in (("baseline", [0.62, 0.63, 0.64]), ("variant", [0.68, 0.69, 0.70])):
        s["models"][name]["per_seed"] = [{"seed": i, "test_top1": a} for i, a in enumerate(accs)]
    h, m, _ = render(tmp_path, pngs, s)
    for doc in (h, m):
        assert "Over 3 seeds, the baseline reached 63.01% ± 1.02 and the variant 69.12% ± 0.87" in doc
        # the decision is the t-test on n, mean and SD: p = 0.0014 for this SD
        assert "the mean test accuracy rose by 6.11 points" in doc and "p = 0.0014" in doc
        assert "Multi-seed results were not computed" not in doc
        assert "Only one training run per model" not in doc
        assert "64.00%" in doc and "70.00%" in doc  # per-seed table
    # one seed per arm: the note from paired_seed_test is shown, no significance claimed
    one = {"n_seeds": 1, "mean_a": 0.6, "mean_b": 0.62, "mean_diff": 0.02, "p_value": None,
           "lo": None, "hi": None, "note": "one seed per arm: no seed-to-seed variance"}
    text = describe_seeds(one, {"decision": "not tested", "n": 1, "mean_diff": 0.02,
                                "reason": "one seed per arm"})
    assert "no seed-to-seed variance" in text and "nothing about the change is tested" in text


def test_producer_key_variants(tmp_path, pngs):
    """Values the producer can write: a per-class row, config values of None, a change whose
    baseline value is None."""
    s = make_summary()
    s["comparison"]["per_class"]["improved"] = [
        {"name": "trout", "n": 10, "before": 0.3, "after": 0.9, "delta": 0.6}]
    s["config"]["train_limit"] = None
    s["change"] = {"key": "train_limit", "baseline": None, "variant": 4000}
    h, m, _ = render(tmp_path, pngs, s)
    for doc in (h, m):
        assert "30.00%" in doc and "90.00%" in doc and "+60.00" in doc
        assert "train" in doc and "not set → 4000" in doc
    assert re.search(r'<tr class="hl"><td class="txt">train_limit</td><td class="txt">not set</td>'
                     r'<td class="txt">4000</td></tr>', h)


def test_complexity_sentence():
    same = {"params": 100, "flops": 1000}
    assert "adds no parameters or FLOPs" in describe_cost(same, same, "augment")
    t = describe_cost(same, {"params": 150, "flops": 1500}, "model")
    assert "50 more parameters (+50.00%)" in t and "+50.00% FLOPs" in t
    t = describe_cost(same, {"params": 100, "flops": 900}, "model")
    assert "same number of parameters" in t and "-10.00% FLOPs" in t
    assert "more parameters" in describe_cost({"params": 0}, {"params": 5}, "model")


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


SUMMARY_PATHS = _paths(make_summary())[1:]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.builds(list), st.builds(dict), st.lists(st.integers(), max_size=3),
                 st.sampled_from(["../../etc/passwd", "/etc/passwd", "", ".", "figures"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(SUMMARY_PATHS), JUNK), min_size=1, max_size=8))
def test_mistyped_summary_renders_or_is_one_line(edits):
    """Any value replaced by junk (wrong type, NaN, inf, hostile path): a value of the right
    type renders (NaN and inf as n/a, a hostile path as no figure), anything else is refused in
    one line naming its key, before any report file is written; never a traceback."""
    s = make_summary()
    for path, junk in edits:
        node = s
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = junk
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent: nothing left to edit
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "summary.json").write_text(json.dumps(s))
        try:
            h, m = (p.read_text() for p in render_report(Path(d)))
        except CifarlensError as e:
            assert "\n" not in str(e) and str(e).startswith(str(Path(d) / "summary.json"))
            assert not (Path(d) / "report.html").exists() and not (Path(d) / "report.md").exists()
            return
    assert "<section id=\"reproducibility\">" in h and "## 15 Reproducibility" in m
    assert "data:image" not in h  # no figure files exist here, whatever the paths say


# --------------------------------------------------------------------------- safety


EVIL = "<script>alert(1)</script>"


def test_escaping_in_html_and_md(tmp_path, pngs):
    s = make_summary()
    s["failures"]["top"][0]["true_name"] = EVIL
    s["failures"]["top"][1]["pred_name"] = "a|b*c_"
    s["failures"]["top"][2]["true_name"] = "ctrl\x00\x1b[31mred\x07\nnext\u202eevil"
    s["models"]["baseline"]["test"]["top_confusions"][0]["true_name"] = '"><img src=x onerror=1>'
    s["title"] = "t`itle` # [x](http://evil)"
    h, m, _ = render(tmp_path, pngs, s)
    assert "<script" not in h.lower() and "onerror=1>" not in h and "<img src=x" not in h
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in h
    assert "a|b*c_" in h
    assert "\\<script\\>alert(1)\\</script\\>" in m and "<script" not in m.replace("\\<", "")
    assert "a\\|b\\*c\\_" in m and "a|b*c_" not in m
    assert "\\[x\\](http://evil)" in m and "](http://evil)" not in m.replace("\\]", "")
    for doc in (h, m):
        bad = [c for c in doc if unicodedata.category(c) == "Cc" and c != "\n"]
        assert not bad, [hex(ord(c)) for c in bad]
        assert "\u202e" not in doc
        assert "ctrlred" in doc and "[31m" not in doc and "next" in doc  # whole sequence gone


@given(st.text(max_size=40))
def test_md_escape_neutralizes_every_special(s):
    out = md_escape(s)
    assert not [c for c in out if unicodedata.category(c) == "Cc"]
    # every special character is preceded by an odd number of backslashes
    for mt in re.finditer(r"[`*_<>|\[\]#~]", out):
        run = len(out[: mt.start()]) - len(out[: mt.start()].rstrip("\\"))
        assert run % 2 == 1, (s, out)


def test_self_contained_and_path_traversal_refused(tmp_path, pngs):
    secret = tmp_path / "secret.png"
    secret.write_bytes(pngs["curves"] + b"SECRET-OUTSIDE-BYTES")
    s = make_summary()
    s["figures"]["curves"] = "../secret.png"
    s["figures"]["reliability"] = str(secret)  # absolute
    s["figures"]["confusion_difference"] = "figures/link.png"
    s["figures"]["extra"] = "figures/not-a-png.png"
    study, _ = make_study(tmp_path, pngs, s)
    (study / "figures" / "link.png").symlink_to(secret)
    (study / "figures" / "not-a-png.png").write_text("<svg onload=alert(1)>")
    h, m = (p.read_text() for p in render_report(study))
    leaked = base64.b64encode(secret.read_bytes()).decode()
    assert leaked[-40:] not in h
    assert h.count("is outside the study folder") == 3
    assert "is not a PNG file" in h
    assert "src=\"http" not in h and "src='http" not in h and "<link" not in h.lower()
    assert "url(" not in h and "@import" not in h and "<script" not in h
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', h)
    assert len(srcs) == len(FIGURE_KEYS) - 3
    assert all(x.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
               for x in srcs)
    # each embedded figure shows the file on disk (re-encoded: photo grids as JPEG)
    for k in ("failure_gallery", "gradcam_tracking", "confusion"):
        assert _embedded_close_to(h, k, pngs[k])
    # Markdown references only in-study figures, by relative path
    assert "](figures/failure_gallery.png)" in m
    assert "](../secret.png)" not in m and f"]({secret})" not in m and "](figures/link.png)" not in m
    assert m.count("is outside the study folder") == 3
    assert "Content-Security-Policy" in h and "default-src 'none'" in h


def _embedded(h: str, key: str) -> tuple[str, bytes]:
    """(mime, bytes) of the image embedded for figure `key` in report.html."""
    m = re.search(rf'<figure id="fig-{key}">.*?<img src="data:(image/\w+);base64,([^"]+)"', h,
                  re.S)
    assert m, key
    return m.group(1), base64.b64decode(m.group(2))


def _embedded_close_to(h: str, key: str, png: bytes) -> bool:
    import io

    import numpy as np
    from PIL import Image

    _, data = _embedded(h, key)
    a = Image.open(io.BytesIO(png)).convert("RGBA")
    flat = Image.new("RGB", a.size, "white")
    flat.paste(a, mask=a.getchannel("A"))
    b = Image.open(io.BytesIO(data)).convert("RGB")
    if b.size != flat.size:
        flat = flat.resize(b.size)
    d = np.abs(np.asarray(flat, float) - np.asarray(b, float))
    return b.size == flat.size and float(d.mean()) < 4.0


def test_missing_figure_file_is_noted_not_fatal(tmp_path, pngs):
    study, _ = make_study(tmp_path, pngs)
    (study / "figures" / "failure_gallery.png").unlink()
    h, m = (p.read_text() for p in render_report(study))
    assert "figure missing: &#39;figures/failure_gallery.png&#39; was not found" in h
    assert "figure missing: 'figures/failure\\_gallery.png' was not found" in m


@pytest.mark.parametrize("source", ["generated", "official"])
def test_generated_banner_iff_generated(tmp_path, pngs, source):
    s = make_summary()
    s["data_source"] = source
    h, m, _ = render(tmp_path, pngs, s)
    has = source == "generated"
    assert ('id="generated-data-notice"' in h) is has
    assert ("GENERATED DATA" in h) is has and ("GENERATED DATA" in m) is has
    if has:  # prominent: before the table of contents
        assert h.index("generated-data-notice") < h.index('class="toc"')
        assert m.index("GENERATED DATA") < m.index("## Contents")


def test_optional_parts_missing(tmp_path, pngs):
    s = make_summary()
    s["dataset"], s["num_classes"] = "cifar10", 10
    s["comparison"]["seeds"] = None
    for m_ in s["models"].values():
        del m_["test"]["superclass"]
    del s["explain"]
    for k in ("confusion_superclass", "gradcam_failures", "deletion_insertion"):
        del s["figures"][k]
    h, m, _ = render(tmp_path, pngs, s)
    for doc in (h, m):
        assert "Multi-seed results were not computed" in doc
        assert "Superclass analysis was not computed" in doc
        assert "Grad-CAM explanations were not computed" in doc
        assert "Background reliance was not measured" in doc


def test_a_summary_with_optional_parts_missing_renders(tmp_path):
    """The parts a study may lack (explanations, superclasses, calibration after scaling,
    timing) render as n/a and notes, never as a crash or "None"."""
    study = tmp_path / "s"
    study.mkdir()
    s = make_summary()
    del s["explain"], s["timing"], s["normalization"]
    for arm in ("baseline", "variant"):
        del s["models"][arm]["test"]["superclass"], s["models"][arm]["calibration"]
    s["figures"] = {"curves": "figures/curves.png"}
    h, m = (p.read_text() for p in render_report(study, summary_from_json(s)))
    for doc in (h, m):
        assert "n/a" in doc and "was not computed" in doc
        assert "None" not in doc
    for sid, title in SECTIONS:
        # no ablation: one change; no data side: not in this summary; no robustness: not asked
        assert (html.escape(title) in h) == (sid not in ("ablation", "data-side", "robustness"))


def test_an_oddly_typed_summary_is_one_line_naming_the_key(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    s = make_summary()
    s["models"]["baseline"]["test"]["top1"] = "high"
    (study / "summary.json").write_text(json.dumps(s))
    with pytest.raises(CifarlensError, match=r"summary.json.baseline.test.top1 must be a number"):
        render_report(study)
    assert not (study / "report.html").exists()


def test_render_report_io(tmp_path, pngs):
    with pytest.raises(CifarlensError, match="not found"):
        render_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CifarlensError, match="missing file"):
        render_report(tmp_path / "empty")
    (tmp_path / "empty" / "summary.json").write_text("[1, 2]")
    with pytest.raises(CifarlensError, match="JSON object"):
        render_report(tmp_path / "empty")
    study, s = make_study(tmp_path, pngs)
    h, m = render_report(study)
    assert (h, m) == (study / "report.html", study / "report.md")
    # passing the summary gives the same output as reading the file; no temp files are left
    before = h.read_text(), m.read_text()
    render_report(study, summary_from_json(copy.deepcopy(s)))
    assert (h.read_text(), m.read_text()) == before
    assert not [p for p in study.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- headless browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but `chromium` is not installed (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI runs this test")
    return exe


def _run_chromium(exe: str, tmp: Path, page: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=60)


def _console(stderr: str) -> list[str]:
    # Chromium logs every page console message (errors, CSP violations, failed loads) to
    # stderr as `...:INFO:CONSOLE(<line>)] "<message>", source: <url>`; its own D-Bus and
    # GPU warnings have other tags. Our page has no scripts, so ANY console line is a defect.
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


class _Gallery(HTMLParser):
    """Collects <img src> inside <section id="failure-cases">."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.imgs, self.found = 0, [], False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id") == "failure-cases":
            self.depth, self.found = 1, True
        elif self.depth and tag == "section":
            self.depth += 1
        elif self.depth and tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "section":
            self.depth -= 1


def test_chromium_renders_report(tmp_path, pngs):
    exe = _chromium()
    h, _ = render_report(make_study(tmp_path, pngs)[0])
    work = tmp_path / "chromium"
    work.mkdir()

    # The harness must see console errors, or the clean result below proves nothing: a page
    # that breaks our CSP (external image) has to produce a CONSOLE line.
    bad = work / "bad.html"
    bad.write_text(h.read_text().replace("</main>", '<img src="http://127.0.0.1:9/x.png"></main>'))
    res = _run_chromium(exe, work, bad, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert any("Content Security Policy" in ln for ln in _console(res.stderr)), res.stderr[-3000:]

    res = _run_chromium(exe, work, h, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _console(res.stderr), _console(res.stderr)
    parser = _Gallery()
    parser.feed(res.stdout)
    assert parser.found, "no <section id='failure-cases'> in the rendered DOM"
    assert parser.imgs and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
                               for s in parser.imgs)

    shot = work / "shot.png"
    res = _run_chromium(exe, work, h, f"--screenshot={shot}", "--window-size=1280,2000")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert not _console(res.stderr), _console(res.stderr)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 30_000, len(data)


def test_tracking_sentence_gives_the_base_rate_and_label_suspects_apart():
    # the issue's demo: 0 of 12 tracked fixed, 8 of them suspected label errors, while the
    # variant fixed 22% of all baseline errors
    trk = {"tracked": 12, "fixed": 0, "still_wrong": 9, "other_wrong": 3,
           "label_suspects": {"tracked": 8, "fixed": 0, "still_wrong": 7, "other_wrong": 1},
           "others": {"tracked": 4, "fixed": 0, "still_wrong": 2, "other_wrong": 2},
           "all_errors": {"errors": 336, "fixed": 74, "share": 74 / 336}}
    t = describe_tracking(trk)
    assert "fixed 0 (0.00%)" in t
    assert "74 of all 336 baseline test errors (22.02%), the base rate" in t
    assert "8 of the 12 tracked are suspected label errors" in t
    assert "agreeing with a probably wrong label" in t and "On the other 4 it fixed 0" in t
    # a suspect "fixed" is counted apart, not as a success on the others
    trk["label_suspects"]["fixed"] = 2
    trk["fixed"] = 2
    t = describe_tracking(trk)
    assert "the variant did so for 2" in t and "On the other 4 it fixed 0 (0.00%)" in t
    t = describe_tracking({"tracked": 3, "fixed": 1, "still_wrong": 1, "other_wrong": 1,
                             "label_suspects": {"tracked": 0}, "others": {"tracked": 3}})
    assert "None of them is a suspected label error" in t and "base rate" not in t


def test_confident_errors_sentence_names_the_probabilities():
    f = {"split": "test", "total_wrong": 336, "confident_wrong": 10, "confident_wrong_raw": 0,
         "confident_threshold": 0.9, "temperature": 0.41,
         "confidence_basis": "temperature-scaled probabilities (T fitted on val)"}
    t = describe_confident_errors(f, 1000)
    assert "10 of them (2.98% of its errors) with confidence ≥ 90.00%" in t
    assert "temperature-scaled probabilities (T = 0.41" in t and "(0 on the raw" in t
    f.pop("temperature")
    f["confidence_basis"] = "raw softmax probabilities (no fitted temperature found)"
    t = describe_confident_errors(f, 1000)
    assert "raw softmax probabilities" in t and "on the raw" not in t


def test_mce_sentence_flags_a_tiny_bin():

    assert MCE_MIN_COUNT == M.MCE_MIN_COUNT
    cal = {"mce_before": 0.935, "mce_count_before": 1, "mce_after": 0.12,
           "mce_count_after": 250}
    t = describe_mce([("baseline", cal, "before"), ("baseline", cal, "after")])
    assert "the baseline's 93.50% before scaling (1 image)" in t and "as noise" in t
    assert "12.00%" not in t
    cal["mce_count_before"] = 40
    assert "at least 30 images" in describe_mce([("baseline", cal, "before")])
    assert "not recorded" in describe_mce([("baseline", {"mce_before": 0.2}, "before")])


def test_calibration_table_carries_mce_and_brier_after_scaling(tmp_path, pngs):
    s = make_summary()
    for arm in ("baseline", "variant"):
        s["models"][arm]["calibration"].update(mce_before=0.935, mce_after=0.1234,
                                               brier_before=0.61, brier_after=0.5432,
                                               mce_count_before=1, mce_count_after=77)
    h, m, _ = render(tmp_path, pngs, s)
    for doc in (h, m):
        assert "12.34%" in doc and "0.543" in doc and "Images in the MCE" in doc
        assert "not in this study's summary" not in doc
        assert "(1 image)" in doc
        assert "NLL (test cross-entropy, no label smoothing)" in doc


def _comp(name, d, dlo, dhi, i, ilo, ihi):
    return {"name": name, "deletion_auc": 0.3, "insertion_auc": 0.5,
            "deletion_diff": {"diff": d, "lo": dlo, "hi": dhi},
            "insertion_diff": {"diff": i, "lo": ilo, "hi": ihi}}


FAITH = {"gradcam": {"deletion_auc": 0.202, "insertion_auc": 0.55}}


def test_faithfulness_sentence_concludes_only_what_the_intervals_support():
    # the issue's smoke model: Grad-CAM 0.202, centre blob 0.223, i.i.d. random 0.341
    tests = {"n": 200, "level": 0.95, "noise": "test-image sampling (paired bootstrap over "
             "the 200 images)", "comparisons": {
                 "random": _comp("i.i.d. random pixels", -0.139, -0.16, -0.12, 0.1, 0.08, 0.12),
                 "smooth_random": _comp("smooth random map", -0.05, -0.07, -0.03, 0.04, 0.02,
                                        0.06),
                 "centre_prior": _comp("centre prior", -0.021, -0.045, 0.004, 0.01, -0.01,
                                       0.03)}}
    t = describe_faithfulness(FAITH, tests)
    assert "Against the i.i.d. random pixels: Grad-CAM's deletion AUC is 0.139 lower" in t
    assert "smooth random map: Grad-CAM's deletion AUC is 0.050 lower (95% CI [-0.070, -0.030])" in t
    assert "centre prior: Grad-CAM's deletion AUC is not distinguishable from it (difference -0.021" in t
    assert "does not show that the maps point at image-specific evidence" in t
    assert "test-image sampling" in t and "200" in t
    # every interval clear of 0 in the right direction: the strong claim
    for c in tests["comparisons"].values():
        c["deletion_diff"].update(lo=-0.06, hi=-0.01)
        c["insertion_diff"].update(lo=0.01, hi=0.05)
    t = describe_faithfulness(FAITH, tests)
    assert "beats every baseline on both measures" in t and "image-specific evidence" in t
    # worse than the centre prior on deletion: no claim of faithfulness
    tests["comparisons"]["centre_prior"]["deletion_diff"].update(diff=0.03, lo=0.01, hi=0.05)
    t = describe_faithfulness(FAITH, tests)
    assert "centre prior: Grad-CAM's deletion AUC is 0.030 higher" in t and "beats every" not in t
    # beats nothing
    for c in tests["comparisons"].values():
        c["deletion_diff"].update(diff=0.01, lo=-0.01, hi=0.03)
        c["insertion_diff"].update(diff=0.0, lo=-0.02, hi=0.02)
    t = describe_faithfulness(FAITH, tests)
    assert "does not beat even i.i.d. random pixels" in t


def test_border_sentence_needs_a_test_and_a_resolving_layer():
    bs = {"failures": 0.55, "correct": 0.48, "uniform": 0.4375, "centre_prior": 0.1,
          "border_px": 4, "cells": [4, 4], "resolves_border": False, "p_value": 0.003}
    t = describe_border(bs)
    assert "7.00 points more of their mass there than correct predictions (p = 0.0030" in t
    assert "permutation test" in t and "10.00% for the centre prior" in t
    assert "not a measure of background reliance" in t and "4×4 cells" in t
    bs["p_value"] = 0.4
    t = describe_border(bs)
    assert "not distinguishable (p = 0.40" in t and "more of their mass" not in t
    bs.update(resolves_border=True, cells=[16, 16], p_value=0.01, failures=0.40)
    t = describe_border(bs)
    assert "8.00 points less" in t and "background reliance" not in t


def test_report_states_the_tested_faithfulness_and_tracking_base_rate(tmp_path, pngs):
    h, m, _ = render(tmp_path, pngs)
    for doc in (h, m):
        # centre prior: 0.2021 - 0.2123 = -0.010 with CI [-0.030, 0.010]: not distinguishable
        # only the centre prior's CI ([-0.030, 0.010]) includes 0
        assert doc.count("deletion AUC is not distinguishable from it") == 1
        assert "does not show that the maps point at image-specific evidence" in doc
        assert "Grad-CAM − baseline" in doc
        assert "1,154 of all 3,709 baseline test errors (31.11%), the base rate" in doc
        assert "not a measure of background reliance" in doc
        assert "(3 on the raw, unscaled probabilities)" in doc and "T = 0.41" in doc
        assert "Raw confidence" in doc and "1,203" in doc


def test_headline_printed_by_study_is_the_reports_verdict(tmp_path, pngs):
    """`cifarlens study` prints one sentence at the end: the report's own verdict clause."""
    h, _, study = render(tmp_path, pngs)
    line = headline(read_summary(study / "summary.json"), study)
    prefix = "augment: none \u2192 crop-flip: "
    assert line.startswith(prefix)
    clause = line[len(prefix):].replace(" (generated data, not CIFAR-100)", "").rstrip(".")
    assert len(clause) > 40 and clause in html.unescape(h)
    assert "augment" in line  # names the change
    summary = make_summary()
    summary["data_source"] = "generated"
    assert headline(summary_from_json(summary), study).endswith("(generated data, not CIFAR-100)")


def test_every_section_has_its_builder_named_in_one_explicit_table():
    # issue 9: sections were found by building function names and looking them up in globals()
    assert [sid for sid, _ in SECTIONS] == list(SECTION_BUILDERS)
    assert all(callable(f) for f in SECTION_BUILDERS.values())


def test_the_subtitle_names_generated_data_and_figures_link_to_full_size(tmp_path, pngs):
    """The subtitle said "CIFAR-100" on generated data, and the 100-class confusion matrix
    could not be zoomed in the page (issue 20): each figure links to its full-size file."""
    h, _, _ = render(tmp_path, pngs)
    sub = re.search(r'<p class="sub">(.*?) · created', h).group(1)
    assert sub.startswith("generated data in the CIFAR-100 format: baseline vs variant")
    h2, _, _ = render(tmp_path / "official", pngs, {**make_summary(), "data_source": "official"})
    assert re.search(r'<p class="sub">(.*?) · created', h2).group(1).startswith("CIFAR-100:")
    assert re.search(r'<a class="path" href="figures/[^"]+\.png" target="_blank"', h)
