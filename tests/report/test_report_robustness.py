"""The robustness section, its sentences on constructed cases, the first screen's line, the
ablation table's mCE column, and the summary schema reading version-2 files with and without
the robustness parts."""

from __future__ import annotations

import copy
import json

import pytest
from summaries import summary_json
from test_report import make_study, pngs, write_png  # noqa: F401  (pngs: the fixture)

from cifarlens.analysis import corruptions as C
from cifarlens.analysis.robustness import compare_arms
from cifarlens.errors import CifarlensError
from cifarlens.report.render import render_report
from cifarlens.report.robustness import (
    describe_failures_under_corruption,
    describe_mce,
    describe_robustness_test,
    robustness_line,
)
from cifarlens.study.robustness import NORMALISER
from cifarlens.study.schema import read_summary, summary_from_json, to_json


def _test(verdict, diff, lo, hi, p, p_holm=None, n=5, a=0.40, b=None):
    return {"n_seeds": n, "mean_a": a, "mean_b": a + diff if b is None else b, "mean_diff": diff,
            "lo": lo, "hi": hi, "p_value": p, "p_holm": p_holm, "level": 0.95,
            "method": "paired_t", "verdict": verdict}


def test_more_robust_is_said_with_the_interval_and_holm_p():
    s = describe_robustness_test(_test("helped", 0.021, 0.004, 0.038, 0.012, 0.031), "noise")
    assert s == ("more robust to noise: +2.10 points [0.40, 3.80] across 5 seeds (40.00% → "
                 "42.10%), paired t p = 0.012, Holm p = 0.031, below 0.05")


def test_less_robust_overall_names_the_number_of_corruptions():
    s = describe_robustness_test(_test("hurt", -0.015, -0.025, -0.005, 0.01), None,
                                 n_corruptions=15)
    assert s.startswith("less robust to the 15 corruptions overall: -1.50 points [-2.50, -0.50]")
    assert "Holm" not in s  # the overall test is one test, not adjusted


def test_no_detectable_difference_says_what_could_have_been_detected():
    s = describe_robustness_test(_test("no detectable difference", 0.01, -0.02, 0.04, 0.4, 0.9),
                                 "digital")
    assert s.startswith("no detectable difference under digital corruptions: +1.00 points "
                        "[-2.00, 4.00]")
    # the interval's half-width: the smallest mean difference this test would have called
    assert "only a mean difference beyond ±3.00 points would have been significant" in s


def test_one_seed_gives_the_numbers_and_no_conclusion():
    s = describe_robustness_test(_test("not tested", 0.03, None, None, None, n=1), "blur")
    assert "+3.00 points" in s and "nothing is concluded" in s
    assert "robust to" not in s and "[" not in s


def test_mce_sentence_names_the_normaliser_and_alexnet():
    comp = {"mce": {"baseline": 0.6, "variant": 0.55},
            "relative_mce_normalised": {"mce_mean": 0.9166, "mean": 0.84, "per_seed": [0.84],
                                        "mce_per_seed": [0.9166], "normaliser": "x"}}
    s = describe_mce(comp)
    assert "baseline 60.00%, variant 55.00%" in s
    assert "variant's mCE is 0.92 and its relative mCE (degradation from clean) 0.84" in s
    assert "AlexNet's errors" in s and "not available" in s


def test_tracked_failures_under_corruption_counted():
    rows = [{"variant": {"status": "fixed"},
             "corruption": {"conditions": 10, "baseline_right": 1, "variant_right": 10}},
            {"variant": {"status": "fixed"},
             "corruption": {"conditions": 10, "baseline_right": 0, "variant_right": 6}},
            {"variant": {"status": "still_wrong"},
             "corruption": {"conditions": 10, "baseline_right": 2, "variant_right": 0}},
            {"variant": {"status": "other_wrong"}}]  # not evaluated: left out
    s = describe_failures_under_corruption(rows)
    assert s.startswith("On the 10 corrupted versions of each of the 3 tracked failures, the "
                        "baseline is right on 10.00% and the variant on 53.33%")
    assert "stays right under every corruption on 1 and gets worse under corruption on 1" in s
    assert describe_failures_under_corruption([]).startswith("The tracked failures were not")


# --- a constructed study with robustness, rendered ----------------------------------------------


def _seed_record(fam_acc):
    tables = {n: {"1": fam_acc[c.family], "5": fam_acc[c.family] - 0.1}
              for n, c in C.CORRUPTIONS.items()}
    return {"clean": 0.8, "corruptions": tables, "held_out": {}, "severities": [1, 5],
            "indices": [3, 4, 5], "n_images": 3, "source": C.SOURCE_NOTE}


def _comparison():
    """compare_arms on 3 paired seeds where noise gains 6 points with sd 1 (detected) and the
    other families do not move: the report must say exactly that."""
    base = [_seed_record({"noise": n, "blur": 0.5, "weather": 0.6, "digital": 0.7})
            for n in (0.40, 0.50, 0.45)]
    var = [_seed_record({"noise": n + g, "blur": 0.5 + j, "weather": 0.6, "digital": 0.7})
           for n, g, j in zip((0.40, 0.50, 0.45), (0.05, 0.06, 0.07), (0.01, -0.01, 0.0),
                              strict=True)]
    return compare_arms(base, var)


def robust_summary(**patch):
    s = summary_json(**patch)
    comp = _comparison()
    s["variants"][0]["robustness"] = comp
    s["variants"][0]["figures"]["robustness"] = "figures/robustness.png"
    for f, right in zip(s["variants"][0]["failures"]["top"], (30, 3, 0), strict=True):
        f["corruption"] = {"conditions": 30, "baseline_right": 1, "variant_right": right}
    s["robustness"] = {
        "source": C.SOURCE_NOTE, "reference": C.REFERENCE, "corruptions": list(C.CORRUPTIONS),
        "severities": [1, 5], "n_images": 3, "normaliser": NORMALISER,
        "families": {n: c.family for n, c in C.CORRUPTIONS.items()},
        "stand_ins": {"frost": "a stand-in"}, "device": "cpu", "baseline_mce": 0.5}
    return s


def test_section_first_screen_and_tracked_failures_rendered(tmp_path, pngs):  # noqa: F811
    study, _ = make_study(tmp_path, pngs, robust_summary())
    write_png(study / "figures" / "robustness.png")
    h, m = (p.read_text() for p in render_report(study))
    sec = m[m.index("Robustness to common corruptions\n"):m.index("Complexity\n")]
    assert C.SOURCE_NOTE in sec and "frost: a stand-in" in sec
    assert "- More robust to noise: +6.00 points" in sec
    assert "- No detectable difference under blur" in sec
    # weather did not move in any seed: no variance, so no test, and said so
    assert "- Under weather: 0.00 points across 3 seeds (55.00% → 55.00%); not tested (the " \
           "difference is identical for every seed" in sec
    assert "AlexNet" in sec and "training seeds, on one fixed set of 3 test images" in sec
    # the table: the detected family highlighted, the Holm p of 4 families
    assert "| **Noise** | **gaussian\\_noise, shot\\_noise, impulse\\_noise** |" in sec
    assert "p (Holm, 4 families)" in sec and "**more robust** |" in sec
    assert "| Blur |" in sec
    assert "Figure" in sec and "robustness.png" in sec
    # the tracked failures: the fixed one kept under all 30, the other fixed one not
    assert "stays right under every corruption on 1 and gets worse under corruption on 0" in sec
    assert "| fixed | 1/30 | 30/30 | no |" in sec
    assert "| still wrong | 1/30 | 3/30 | already wrong |" in sec
    # the first screen's line, in both formats, before the contents
    line = robustness_line(_comparison(), robust_summary()["robustness"])
    assert line.startswith("Robustness (3 test images, corruptions computed locally): ")
    assert m.index("Robustness (3 test images") < m.index("## 1 ")
    assert 'id="robustness-line"' in h and '<section id="robustness">' in h


def test_without_robustness_nothing_is_said(tmp_path, pngs):  # noqa: F811
    study, _ = make_study(tmp_path, pngs, summary_json())
    h, m = (p.read_text() for p in render_report(study))
    assert "Robustness" not in m and 'id="robustness-line"' not in h


def test_ablation_table_gains_an_mce_column(tmp_path, pngs):  # noqa: F811
    s = robust_summary()
    second = copy.deepcopy(s["variants"][0])
    second.update(slug="label-smoothing-0", change={"key": "label_smoothing", "baseline": 0.1,
                                                    "variant": 0.0})
    second["robustness"]["mce"]["variant"] = 0.4321
    second["figures"] = {}
    s["variants"].append(second)
    rows = []
    for v in s["variants"]:
        rows.append({"change": f"{v['change']['key']}=x", "key": v["change"]["key"],
                     "slug": v["slug"], "baseline_value": v["change"]["baseline"],
                     "variant_value": v["change"]["variant"], "before": 0.6, "after": 0.61,
                     "diff": 0.01, "lo": -0.01, "hi": 0.03, "p": 0.3, "p_holm": 0.6,
                     "verdict": "no detectable difference", "n_seeds": 3,
                     "per_seed_mcnemar": []})
    s["ablation"] = {"method": "m", "test": "paired_t", "correction": "holm", "m": 2,
                     "alpha": 0.05, "level": 0.95, "covers": "seeds", "per_seed_covers": "x",
                     "rows": rows}
    study, _ = make_study(tmp_path, pngs, s)
    write_png(study / "figures" / "robustness.png")
    m = render_report(study)[1].read_text()
    ab = m[m.index("Every change against the baseline\n"):m.index("Summary\n")]
    assert "mCE (baseline 50.00%) |" in ab and "| 43.21% |" in ab
    # the second change's robustness is in the robustness section too
    assert "label\\_smoothing: 0.1 → 0" in m.split("Robustness to common corruptions\n")[-1]


# --- the schema ----------------------------------------------------------------------------------


def test_a_version_2_file_without_the_robustness_parts_still_reads(tmp_path):
    data = summary_json()
    for part in (data, data["variants"][0], data["variants"][0]["failures"]["top"][0]):
        part.pop("robustness", None)
        part.pop("corruption", None)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    s = read_summary(path)
    assert s.robustness is None and s.main.robustness is None
    assert s.main.failures.top[0].corruption is None


def test_robustness_parts_round_trip_and_are_checked_key_by_key():
    data = robust_summary()
    s = summary_from_json(data)
    assert s.main.robustness.families["noise"].verdict == "helped"
    assert s.robustness.corruptions == list(C.CORRUPTIONS)
    assert to_json(summary_from_json(to_json(s))) == to_json(s)
    assert s.main.robustness.overall.mean_diff == _comparison()["overall"]["mean_diff"]
    bad = robust_summary()
    bad["variants"][0]["robustness"]["families"]["noise"]["colour"] = "red"
    with pytest.raises(CifarlensError, match=r"robustness.families.noise has an unknown key"):
        summary_from_json(bad)
    bad = robust_summary()
    bad["robustness"]["n_images"] = "three"
    with pytest.raises(CifarlensError, match=r"summary.json.robustness.n_images must be"):
        summary_from_json(bad)
