"""The comparison section: the one pair's paired interval and McNemar's test, the per-class changes
with Newcombe intervals, and each seed's numbers."""

from __future__ import annotations

from typing import Any

from cifarlens.analysis.intervals import newcombe_diff_ci
from cifarlens.report.blocks import (
    Block,
    heading,
    note_block,
    paragraph,
    table_block,
)
from cifarlens.report.constants import (
    ALPHA,
    METHOD_TEXT,
    NA,
)
from cifarlens.report.formats import (
    _alpha_text,
    _cap,
    _s,
    first_set,
    fmt_int,
    fmt_p,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)
from cifarlens.report.sentences import (
    NOISE_PAIR,
    describe_seeds,
)
from cifarlens.report.view import View
from cifarlens.study.schema import to_json


def sec_comparison(v: View) -> list[Block]:
    """11 Comparison & statistics."""
    out: list[Block] = []
    out.append(paragraph(" ".join(filter(None, [_cap(v.accuracy_change(from_to=False)) + ".",
                                         v.noise_text()]))))
    if v.seed_level:
        out.append(heading(f"One pair: seed {_s(v.pair_seed)} (supporting detail)"))
        out.append(paragraph(
            f"For the seed-{_s(v.pair_seed)} pair alone the difference is "
            f"{fmt_points(v.acc.diff, signed=True)} points (95% CI "
            f"[{fmt_points(v.acc.lo)}, {fmt_points(v.acc.hi)}], "
            f"McNemar's exact test {p_clause(v.mc.p_value)}); it covers {NOISE_PAIR}."))
    if v.acc:
        lvl = num(v.acc.level) or 0.95
        out.append(table_block(
            ["Difference (variant − baseline)", f"{lvl * 100:g}% CI low",
             f"{lvl * 100:g}% CI high", "Standard error", "Method"],
            [[fmt_points(v.acc.diff, signed=True) + " points", fmt_points(v.acc.lo),
              fmt_points(v.acc.hi), fmt_points(v.acc.se),
              METHOD_TEXT.get(str(v.acc.method), _s(v.acc.method))]],
            align="rrrrl", caption="Paired accuracy difference on the test images"
            + (f" (seed-{_s(v.pair_seed)} pair; covers {NOISE_PAIR})"
               if v.pair_seed is not None else f" (covers {NOISE_PAIR})")))
    else:
        out.append(note_block("The accuracy-difference confidence interval was not computed."))
    if v.mc:
        out.append(heading("McNemar's exact test"))
        out.append(table_block(
            ["", "Variant right", "Variant wrong"],
            [["Baseline right", fmt_int(v.mc.both_right), fmt_int(v.mc.a_only)],
             ["Baseline wrong", fmt_int(v.mc.b_only), fmt_int(v.mc.both_wrong)]],
            caption=f"Paired outcomes on {fmt_int(v.mc.n)} test images; "
                    f"{p_clause(v.mc.p_value)} (two-sided exact binomial on the "
                    f"discordant images, statistic {fmt_int(v.mc.statistic)})"))
        sig = ("significant" if (num(v.mc.p_value) is not None
                                 and num(v.mc.p_value) < ALPHA)  # type: ignore[operator]
               else "not significant")
        out.append(paragraph(
            f"The variant fixed {fmt_int(v.mc.b_only)} images the baseline got wrong and "
            f"broke {fmt_int(v.mc.a_only)} it got right; only these discordant images "
            f"carry evidence. McNemar's exact test: {p_clause(v.mc.p_value)}"
            # with several seeds the verdict is the seed-level test's alone: no second one here
            + ("." if v.seed_level else
               f", {sig} at the {_alpha_text(ALPHA)} level for these two trained models "
               f"({NOISE_PAIR}).")))
    else:
        out.append(note_block("McNemar's test was not computed."))
    pc = v.comp.per_class
    for kind, title in (("improved", "Most improved classes"),
                        ("worsened", "Most worsened classes")):
        items = getattr(pc, kind)[:10]
        if items:
            out.append(table_block(
                ["Class", "Test images", "Baseline", "Variant", "Change (points)",
                 "95% CI (Newcombe)"],
                [[_s(x.name), fmt_int(x.n), fmt_pct(x.before), fmt_pct(x.after),
                  fmt_points(x.delta, signed=True), _class_ci_text(to_json(x))] for x in items],
                caption=title + f" (test accuracy per class, seed-{_s(v.pair_seed)} pair; "
                f"{PER_CLASS_CI_NOTE})"))
    if pc.improved or pc.worsened:
        bits = []
        if pc.improved:
            bits.append("the most improved class is "
                        f"{describe_class_change(to_json(pc.improved[0]))}")
        if pc.worsened:
            bits.append(f"the most worsened is {describe_class_change(to_json(pc.worsened[0]))}")
        out.append(paragraph(_cap("; ".join(bits)) + f". {PER_CLASS_CI_NOTE[:1].upper()}"
                      f"{PER_CLASS_CI_NOTE[1:]}, so no class-level change is called significant "
                      "here."))
    else:
        out.append(note_block("Per-class changes were not computed."))
    out += v.figs("comparison", "confusion_difference", "per_class_changes")
    out.append(heading("Across seeds"))
    out.append(paragraph(describe_seeds(to_json(v.seeds_block) if v.seeds_block else None,
                                        ALPHA, v.s.seeds)))
    ps_a = {_s(x.seed): x.test_top1 for x in v.base.per_seed}
    ps_b = {_s(x.seed): x.test_top1 for x in v.var.per_seed}
    per_seed_mc = v.seeds_block.mcnemar_per_seed if v.seeds_block else []
    if per_seed_mc:
        out.append(table_block(
            ["Seed", "Difference (points)", "95% CI (paired Wald)", "Baseline only right",
             "Variant only right", "McNemar p"],
            [[_s(x.seed), fmt_points(x.diff, signed=True),
              f"[{fmt_points(x.lo)}, {fmt_points(x.hi)}]" if num(x.lo) is not None else NA,
              fmt_int(x.a_only), fmt_int(x.b_only), fmt_p(x.p_value)] for x in per_seed_mc],
            caption=f"Each seed's pair on the test images (supporting detail; covers "
                    f"{NOISE_PAIR} each)"))
    if len(ps_a) > 1 or len(ps_b) > 1:
        out.append(table_block(["Seed", "Baseline test top-1", "Variant test top-1"],
                          [[s, fmt_pct(ps_a.get(s)), fmt_pct(ps_b.get(s))]
                           for s in dict.fromkeys(list(ps_a) + list(ps_b))],
                          caption="Per-seed test accuracy"))
    return out


PER_CLASS_CI_NOTE = ("intervals: Newcombe's hybrid Wilson score method for a difference of two "
                     "proportions over that class's test images, treating the arms as "
                     "independent (wider than a paired interval when the two models agree on "
                     "many images); they cover test-image sampling only and are not adjusted "
                     "for picking the largest changes out of all classes")


def class_change_ci(x: dict[str, Any]) -> tuple[float, float] | None:
    """The Newcombe interval of one per-class change (needs its image count n)."""
    n = num(x.get("n"))
    a, b = num(first_set(x, "before", "acc_a")), num(first_set(x, "after", "acc_b"))
    if n is None or n < 1 or a is None or b is None:
        return None
    return newcombe_diff_ci(round(a * n), n, round(b * n), n)


def _class_ci_text(x: dict[str, Any]) -> str:
    ci = class_change_ci(x)
    return NA if ci is None else f"[{fmt_points(ci[0])}, {fmt_points(ci[1])}]"


def describe_class_change(x: dict[str, Any]) -> str:
    """'whale (+54.55 points on 11 test images, 95% CI [14.10, 74.68])', or with no image count
    'whale (+54.55 points; the number of test images was not recorded, so no interval)'."""
    name, delta = _s(x.get("name")), fmt_points(x.get("delta"), signed=True)
    ci = class_change_ci(x)
    if ci is None:
        return (f"{name} ({delta} points; the number of test images was not recorded, so no "
                "interval)")
    n = int(num(x.get("n")) or 0)
    return (f"{name} ({delta} points on {n} test image{'' if n == 1 else 's'}, 95% CI "
            f"[{fmt_points(ci[0])}, {fmt_points(ci[1])}])")
