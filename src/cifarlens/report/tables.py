"""The comparison tables written as CSV beside the report."""


from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlens.csvfile import csv_cell, csv_text
from cifarlens.report.formats import _d, _diff, _l, _s
from cifarlens.report.sections import class_change_ci, first_set
from cifarlens.report.sentences import SEED_REPORT, _seed_ci
from cifarlens.report.view import View
from cifarlens.study.folder import StudyFolder

# --------------------------------------------------------------------------- CSV tables

TABLES_DIR = StudyFolder.TABLES


# the one CSV writer (csvfile.py): kept under these names for the report's importers
_cell = csv_cell
_csv_text = csv_text


def comparison_tables(summary: dict[str, Any], study_dir: Path) -> dict[str, str]:
    """The report's comparison tables as CSV text, by file name: the numbers of summary.json
    unformatted (fractions, not percentages), for a paper's tables or a spreadsheet."""
    v = View(summary, study_dir)
    sb = _d(v.seeds_block)
    lo, hi = _seed_ci(sb)
    sr = SEED_REPORT
    rep = [
        ["baseline_top1", sr["baseline_top1"],
         sb.get("mean_a") if v.seed_level else v.bt.get("top1"), None, None],
        ["variant_top1", sr["variant_top1"],
         sb.get("mean_b") if v.seed_level else v.vt.get("top1"), None, None],
        ["diff", sr["diff"], sb.get("mean_diff") if v.seed_level else v.diff,
         lo if v.seed_level else v.acc.get("lo"), hi if v.seed_level else v.acc.get("hi")],
        ["params", sr["params"], v.base.get("params"), None, None],
        ["flops", None, v.base.get("flops"), None, None],
    ]
    comp = []
    if v.seed_level:
        comp.append(["test_top1_mean_over_seeds", sb.get("mean_a"), sb.get("mean_b"),
                     sb.get("mean_diff"), lo, hi, sb.get("p_value"), "paired_t",
                     f"{v.n_seeds} seeds"])
    comp.append([f"test_top1_seed_{_s(v.pair_seed)}", v.bt.get("top1"), v.vt.get("top1"),
                 v.acc.get("diff", v.diff), v.acc.get("lo"), v.acc.get("hi"),
                 v.mc.get("p_value"), _s(v.acc.get("method"), ""), "one pair"])
    for key in ("top5", "macro_f1", "ece"):
        comp.append([f"test_{key}_seed_{_s(v.pair_seed)}", v.bt.get(key), v.vt.get(key),
                     _diff(v.bt.get(key), v.vt.get(key)), None, None, None, "", "one pair"])
    pc = _d(v.comp.get("per_class"))
    per_class = []
    for kind in ("improved", "worsened"):
        for x in map(_d, _l(pc.get(kind))):
            ci = class_change_ci(x) or (None, None)
            per_class.append([x.get("name"), kind, x.get("n"), first_set(x, "before", "acc_a"),
                              first_set(x, "after", "acc_b"), x.get("delta"), ci[0], ci[1]])
    ps_a = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.base.get("per_seed"))}
    ps_b = {_s(_d(x).get("seed")): _d(x).get("test_top1") for x in _l(v.var.get("per_seed"))}
    mcs = {_s(_d(x).get("seed")): _d(x) for x in _l(sb.get("mcnemar_per_seed"))}
    per_seed = []
    for seed in dict.fromkeys(list(ps_a) + list(ps_b) + list(mcs)):
        mc = mcs.get(seed, {})
        per_seed.append([seed, ps_a.get(seed), ps_b.get(seed),
                         mc.get("diff", _diff(ps_a.get(seed), ps_b.get(seed))), mc.get("lo"),
                         mc.get("hi"), mc.get("a_only"), mc.get("b_only"), mc.get("p_value")])
    return {
        "replication.csv": _csv_text(["quantity", "seed_report", "this_study", "this_study_lo",
                                      "this_study_hi"], rep),
        "comparison.csv": _csv_text(["quantity", "baseline", "variant", "difference", "lo", "hi",
                                     "p_value", "method", "noise"], comp),
        "per_class.csv": _csv_text(["class", "kind", "n", "baseline", "variant", "difference",
                                    "newcombe_lo", "newcombe_hi"], per_class),
        "per_seed.csv": _csv_text(["seed", "baseline_top1", "variant_top1", "difference", "lo",
                                   "hi", "baseline_only_right", "variant_only_right",
                                   "mcnemar_p"], per_seed),
    }


