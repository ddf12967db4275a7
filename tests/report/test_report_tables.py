"""`cifarlens report` writes the comparison tables as CSV, matching summary.json."""

from __future__ import annotations

import csv
import io
import json

import test_report
from test_report import _three_seeds, make_study, make_summary

from cifarlens.analysis.intervals import newcombe_diff_ci
from cifarlens.report.render import render_report

pngs = test_report.pngs  # the figure fixture, shared


def _read(study, name):
    with (study / "tables" / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _f(x: str) -> float | None:
    return None if x == "" else float(x)


def test_csv_tables_parse_and_match_the_summary(tmp_path, pngs):
    s = _three_seeds(make_summary(), mean_diff=0.0611, ci=[0.0511, 0.0711], p=0.0013)
    s["comparison"]["per_class"]["improved"][0]["n"] = 10
    s["models"]["baseline"]["per_seed"] = [{"seed": i, "test_top1": 0.62 + i / 100}
                                           for i in range(3)]
    s["models"]["variant"]["per_seed"] = [{"seed": i, "test_top1": 0.68 + i / 100}
                                          for i in range(3)]
    study, _ = make_study(tmp_path, pngs, s)
    render_report(study)
    s = json.loads((study / "summary.json").read_text())
    seeds = s["comparison"]["seeds"]

    rep = {r["quantity"]: r for r in _read(study, "replication.csv")}
    assert _f(rep["baseline_top1"]["seed_report"]) == 0.6291
    assert _f(rep["baseline_top1"]["this_study"]) == seeds["mean_a"]
    assert _f(rep["variant_top1"]["this_study"]) == seeds["mean_b"]
    assert (_f(rep["diff"]["this_study"]), _f(rep["diff"]["this_study_lo"]),
            _f(rep["diff"]["this_study_hi"])) == (seeds["mean_diff"], *seeds["ci"])
    assert rep["params"]["this_study"] == str(s["models"]["baseline"]["params"])

    comp = {r["quantity"]: r for r in _read(study, "comparison.csv")}
    m = comp["test_top1_mean_over_seeds"]
    assert (_f(m["difference"]), _f(m["lo"]), _f(m["hi"]), _f(m["p_value"])) == (
        seeds["mean_diff"], *seeds["ci"], seeds["p_value"])
    assert m["method"] == "paired_t" and m["noise"] == "3 seeds"
    pair = comp["test_top1_seed_0"]
    acc, mc = s["comparison"]["accuracy_difference"], s["comparison"]["mcnemar"]
    assert (_f(pair["baseline"]), _f(pair["variant"])) == (
        s["models"]["baseline"]["test"]["top1"], s["models"]["variant"]["test"]["top1"])
    assert (_f(pair["difference"]), _f(pair["lo"]), _f(pair["hi"]), _f(pair["p_value"])) == (
        acc["diff"], acc["lo"], acc["hi"], mc["p_value"])
    assert _f(comp["test_ece_seed_0"]["baseline"]) == s["models"]["baseline"]["test"]["ece"]

    pcs = _read(study, "per_class.csv")
    want = s["comparison"]["per_class"]
    assert [r["class"] for r in pcs] == [x["name"] for x in want["improved"] + want["worsened"]]
    cup = pcs[0]
    assert (cup["kind"], cup["n"], _f(cup["baseline"]), _f(cup["variant"]),
            _f(cup["difference"])) == ("improved", "10", 0.5, 0.7, 0.2)
    lo, hi = newcombe_diff_ci(5, 10, 7, 10)
    assert (_f(cup["newcombe_lo"]), _f(cup["newcombe_hi"])) == (lo, hi)
    assert pcs[1]["n"] == "" and pcs[1]["newcombe_lo"] == ""  # lamp: no n, no interval

    ps = _read(study, "per_seed.csv")
    assert [r["seed"] for r in ps] == ["0", "1", "2"]
    for r, x in zip(ps, seeds["mcnemar_per_seed"], strict=True):
        assert _f(r["baseline_top1"]) == 0.62 + int(r["seed"]) / 100
        assert (_f(r["difference"]), _f(r["lo"]), _f(r["hi"]), _f(r["mcnemar_p"])) == (
            x["diff"], x["lo"], x["hi"], x["p_value"])
        assert int(r["baseline_only_right"]) == x["a_only"]


def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path, pngs):
    s = make_summary()
    s["comparison"]["per_class"]["improved"][0]["name"] = '=HYPERLINK("http://x","y")'
    s["comparison"]["per_class"]["worsened"][0]["name"] = "a,b\n\"c\""
    study, _ = make_study(tmp_path, pngs, s)
    render_report(study)
    text = (study / "tables" / "per_class.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][0] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert rows[2][0] == 'a,b "c"'  # one cell, newline cleaned
    assert not list((study / "tables").glob(".*.tmp"))  # atomic: no temp file left
