"""The comparison tables written as CSV beside the report."""


from __future__ import annotations

from pathlib import Path

from cifarlens.csvfile import csv_text
from cifarlens.report.comparison import class_change_ci
from cifarlens.report.formats import _diff, _s
from cifarlens.report.sentences import SEED_REPORT
from cifarlens.report.view import View
from cifarlens.study.folder import StudyFolder
from cifarlens.study.schema import StudySummary, to_json

# --------------------------------------------------------------------------- CSV tables

TABLES_DIR = StudyFolder.TABLES


def comparison_tables(summary: StudySummary, study_dir: Path) -> dict[str, str]:
    """The report's comparison tables as CSV text, by file name: the numbers of summary.json
    unformatted (fractions, not percentages), for a paper's tables or a spreadsheet."""
    v = View(summary, study_dir)
    sb = v.seeds_block
    lo, hi = sb.ci if sb else (None, None)
    sr = SEED_REPORT
    rep = [
        ["baseline_top1", sr["baseline_top1"], sb.mean_a if v.seed_level else v.bt.top1,
         None, None],
        ["variant_top1", sr["variant_top1"], sb.mean_b if v.seed_level else v.vt.top1,
         None, None],
        ["diff", sr["diff"], sb.mean_diff if v.seed_level else v.diff,
         lo if v.seed_level else v.acc.lo, hi if v.seed_level else v.acc.hi],
        ["params", sr["params"], v.base.params, None, None],
        ["flops", None, v.base.flops, None, None],
    ]
    comp = []
    if v.seed_level:
        comp.append(["test_top1_mean_over_seeds", sb.mean_a, sb.mean_b, sb.mean_diff, lo, hi,
                     sb.p_value, "paired_t", f"{v.n_seeds} seeds"])
    comp.append([f"test_top1_seed_{_s(v.pair_seed)}", v.bt.top1, v.vt.top1, v.acc.diff,
                 v.acc.lo, v.acc.hi, v.mc.p_value, _s(v.acc.method, ""), "one pair"])
    for key in ("top5", "macro_f1", "ece"):
        a, b = getattr(v.bt, key), getattr(v.vt, key)
        comp.append([f"test_{key}_seed_{_s(v.pair_seed)}", a, b, _diff(a, b), None, None, None,
                     "", "one pair"])
    per_class = []
    for kind in ("improved", "worsened"):
        for x in getattr(v.comp.per_class, kind):
            ci = class_change_ci(to_json(x)) or (None, None)
            per_class.append([x.name, kind, x.n, x.before, x.after, x.delta, ci[0], ci[1]])
    ps_a = {_s(x.seed): x.test_top1 for x in v.base.per_seed}
    ps_b = {_s(x.seed): x.test_top1 for x in v.var.per_seed}
    mcs = {_s(x.seed): x for x in (sb.mcnemar_per_seed if sb else [])}
    per_seed = []
    for seed in dict.fromkeys(list(ps_a) + list(ps_b) + list(mcs)):
        mc = mcs.get(seed)
        diff = mc.diff if mc else _diff(ps_a.get(seed), ps_b.get(seed))
        per_seed.append([seed, ps_a.get(seed), ps_b.get(seed), diff] + (
            [mc.lo, mc.hi, mc.a_only, mc.b_only, mc.p_value] if mc else [None] * 5))
    return {
        "replication.csv": csv_text(["quantity", "seed_report", "this_study", "this_study_lo",
                                     "this_study_hi"], rep),
        "comparison.csv": csv_text(["quantity", "baseline", "variant", "difference", "lo", "hi",
                                    "p_value", "method", "noise"], comp),
        "per_class.csv": csv_text(["class", "kind", "n", "baseline", "variant", "difference",
                                   "newcombe_lo", "newcombe_hi"], per_class),
        "per_seed.csv": csv_text(["seed", "baseline_top1", "variant_top1", "difference", "lo",
                                  "hi", "baseline_only_right", "variant_only_right",
                                  "mcnemar_p"], per_seed),
    }
