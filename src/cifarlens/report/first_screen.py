"""The report's first screen: the verdict, the seed report side by side, and the ablation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlens.report.blocks import Block, bullet_list, heading, note_block, paragraph, table_block
from cifarlens.report.constants import (
    ALPHA,
    NA,
)
from cifarlens.report.convergence import curve_warnings
from cifarlens.report.formats import (
    _alpha_text,
    _cap,
    _d,
    _s,
    change_text,
    clean_text,
    fmt_flops,
    fmt_int,
    fmt_p,
    fmt_pct,
    fmt_points,
    num,
)
from cifarlens.report.robustness import ablation_mce, first_screen_line
from cifarlens.report.sentences import (
    NOISE_PAIR,
    NOISE_SEEDS,
    SEED_REPORT,
    describe_cost,
    describe_tracking,
)
from cifarlens.report.verdicts import (
    REFERENCE,
    ablation_word,
    describe_decision,
    describe_replication_judgement,
    margin_text,
    replication_judgement,
    replication_settings,
    verdict_lead,
)
from cifarlens.report.view import View, row_decision, row_decisions
from cifarlens.study.schema import StudySummary, to_json


def replication_why_not(s: StudySummary) -> list[str]:
    """Why this study cannot be set against the seed report ([] = it can): every setting the
    seed states, the data, the change and the precision (verdicts.replication_settings)."""
    return replication_settings({
        "data_source": s.data_source, "dataset": s.dataset, "data_name": s.data_name,
        "change": to_json(s.main.change), "config": s.config,
        "environment": to_json(s.environment)}, REFERENCE)


def _replication_text(v: View) -> str:
    """The replication sentence: where the seed's +6.63 sits against this study's interval."""
    sb, margin = v.seeds_block, v.s.verdicts.margin if v.s.verdicts else 0.01
    lo, hi = sb.ci if v.seed_level else (None, None)
    return describe_replication_judgement(replication_judgement(lo, hi, margin), lo, hi,
                                          v.n_seeds, replication_why_not(v.s), margin)


def sec_replication(v: View) -> list[Block]:
    """0 The seed report side by side: its numbers, this study's, and whether they agree."""
    sr, sb = SEED_REPORT, v.seeds_block
    why_not = replication_why_not(v.s)
    margin = v.s.verdicts.margin if v.s.verdicts else 0.01
    if v.seed_level:
        lo, hi = sb.ci
        a, b = fmt_pct(sb.mean_a), fmt_pct(sb.mean_b)
        sd = [sb.std_a, sb.std_b]
        a += f" ± {fmt_points(sd[0])}" if num(sd[0]) is not None else ""
        b += f" ± {fmt_points(sd[1])}" if num(sd[1]) is not None else ""
        ch = (f"{fmt_points(sb.mean_diff, signed=True)} [{fmt_points(lo)}, "
              f"{fmt_points(hi)}]" if num(lo) is not None else
              fmt_points(sb.mean_diff, signed=True))
        col = f"This study (mean ± std over {v.n_seeds} seeds)"
        how = (f"95% CI across {v.n_seeds} seeds (paired t): covers {NOISE_SEEDS}")
    else:
        a, b = fmt_pct(v.bt.top1), fmt_pct(v.vt.top1)
        ch = f"{fmt_points(v.diff, signed=True)} [{fmt_points(v.acc.lo)}, {fmt_points(v.acc.hi)}]"
        col = "This study (one trained pair)"
        how = f"95% CI (paired Wald): covers {NOISE_PAIR}"
    if v.generated:
        col += ", generated data"
    rows = [
        ["Baseline test accuracy", fmt_pct(sr["baseline_top1"]), a],
        ["Crop + flip test accuracy" if not why_not else "Variant test accuracy",
         fmt_pct(sr["variant_top1"]), b],
        ["Change (points)", fmt_points(sr["diff"], signed=True), ch],
        ["Interval of the change", "none (one run per model)", how],
        ["Parameters", fmt_int(sr["params"]), fmt_int(v.base.params)],
        ["FLOPs per image", sr["flops_text"], fmt_flops(v.base.flops)],
    ]
    out: list[Block] = [table_block(["Quantity", "Seed report", col], rows, align="lll",
                               caption="The seed report's numbers next to this study's")]
    out.append(paragraph(_replication_text(v), lead="Replication."))
    if not why_not:
        m = margin_text(margin)
        out.append(note_block(
            f"Reproduced: the seed-level 95% CI lies within {m} of the seed's +6.63 points; "
            "consistent: it holds +6.63 and excludes 0 but is wider than that; exceeded: it "
            "lies wholly above +6.63; smaller: above 0 but below +6.63; not reproduced: below "
            "+6.63 and holding 0 (no gain shown), or wholly below 0 (a loss); not decided: it "
            "holds both 0 and +6.63. The seed report gives no interval, so its own run-to-run "
            "noise is not counted. cifarlens fills the settings the seed leaves open with its "
            "paper preset (section Training setup); a study with other values is not compared."))
    return out


def describe_ablation_row(r: dict[str, Any], ab: dict[str, Any],
                          dec: dict[str, Any] | None = None) -> str:
    """One change's sentence in the ablation: its decision (power.decide with the Holm-adjusted
    p, the same record the headline states for the first change) with its interval, test,
    power and the noise covered; with one seed, the numbers and nothing more."""
    r, ab = _d(r), _d(ab)
    head = change_text(r.get("key"), r.get("baseline_value"), r.get("variant_value"))
    dec = _d(dec if dec is not None else row_decision(r, num(ab.get("level")) or 0.95))
    if not dec:
        return (f"{head}: test accuracy from {fmt_pct(r.get('before'))} to "
                f"{fmt_pct(r.get('after'))}, {fmt_points(r.get('diff'), signed=True)} points, "
                "for one trained pair; with one seed there is no seed-level test, so nothing "
                "is concluded about this change.")
    return (f"{head}: " + describe_decision(dec, before=r.get("before"), after=r.get("after"),
                                            family=num(ab.get("m"))) + ".")


def ablation_lines(summary: StudySummary) -> list[str]:
    """The ablation's one sentence per change (empty for a one-change study): what `cifarlens
    study` prints after the headline."""
    if summary.ablation is None:
        return []
    ab, decs = to_json(summary.ablation), row_decisions(summary)
    return [clean_text(describe_ablation_row(r, ab, decs.get(r["slug"]))) for r in ab["rows"]]


def sec_ablation(v: View) -> list[Block] | None:
    """Every change against the shared baseline (only in a study with 2+ changes)."""
    if v.s.ablation is None or not v.s.ablation.rows:
        return None
    ab, rows = v.s.ablation, v.s.ablation.rows
    m = fmt_int(ab.m)
    decs = v.row_decisions()
    words = [ablation_word(decs.get(r.slug)) if decs.get(r.slug) else "not tested"
             for r in rows]
    mce = ablation_mce(v)  # study --robustness: each change's mCE column
    table = []
    for r, word in zip(rows, words, strict=True):
        mc = ", ".join(f"s{_s(x.seed)}: {fmt_p(x.p_value)}" for x in r.per_seed_mcnemar)
        ci = f" [{fmt_points(r.lo)}, {fmt_points(r.hi)}]" if num(r.lo) is not None else ""
        table.append([change_text(r.key, r.baseline_value, r.variant_value), fmt_pct(r.before),
                      fmt_pct(r.after), fmt_points(r.diff, signed=True) + ci, fmt_p(r.p),
                      fmt_p(r.p_holm), word, mc or NA]
                     + ([mce.get(r.slug, NA)] if mce else []))
    out: list[Block] = [
        paragraph(f"{fmt_int(len(rows))} variants, each differing from one shared baseline in exactly "
           "one training setting; the baseline runs were trained once and every variant is "
           "paired with them by seed.", lead="Ablation."),
        table_block(["Change", "Baseline", "Variant", "Difference, points [95% CI]", "p (paired t)",
                f"p (Holm, {m} changes)", "Verdict", "Per-seed McNemar p"]
                + ([f"mCE (baseline {fmt_pct(v.s.robustness.baseline_mce)})"] if mce else []),
                table, align="lrrrrrll" + ("r" if mce else ""),
                highlight={i for i, w in enumerate(words) if w in ("helped", "hurt")},
               caption="Every change against the baseline: mean test accuracy over seeds"),
        bullet_list([describe_ablation_row(r, to_json(ab), decs.get(r["slug"]))
                     for r in to_json(ab)["rows"]]),
        note_block(f"Method: {_s(ab.method)}. Holm's correction keeps the chance that any of "
              f"the {m} verdicts is a false 'helped' or 'hurt' at {_alpha_text(num(ab.alpha) or ALPHA)}; "
              "the intervals are not adjusted; 'equivalent' is two one-sided tests within the "
              "margin, unadjusted. The headline states the first change's row. The per-seed "
              "McNemar tests cover "
              f"{NOISE_PAIR} each: supporting detail, not the verdict. The first change's "
              "figures and tracked failures are in the sections below; the others' follow."),
    ]
    for var in v.s.variants[1:]:  # the first's: sections below
        c, slug = var.change, var.slug
        out.append(heading(change_text(c.key, c.baseline, c.variant)))
        if var.failures.tracking.tracked:
            out.append(paragraph(describe_tracking(to_json(var.failures.tracking))))
        out += [{"type": "figure", "fig": f} for f in v.placed["ablation"]
                if f.key in (f"gradcam_tracking_{slug}", f"curves_{slug}")]
    return out


def first_screen_ablation(v: View) -> list[Block]:
    """The first screen's table of several one-change comparisons, when summary.json has an
    "ablation" block; [] when it has none. Each verdict is its row's decision (Holm-adjusted),
    the one the headline states for the first change."""
    rows = v.s.ablation.rows if v.s.ablation else []
    if not rows:
        return []
    decs = v.row_decisions()
    return [table_block(
        ["Change", "Difference (points)", "95% CI", "p", "p (Holm)", "Verdict"],
        [[_s(r.change), fmt_points(r.diff, signed=True),
          f"[{fmt_points(r.lo)}, {fmt_points(r.hi)}]", fmt_p(r.p), fmt_p(r.p_holm),
          ablation_word(decs.get(r.slug)) if decs.get(r.slug) else "not tested"]
         for r in rows],
        align="lrrrrl", caption="Each change against the baseline")]


def first_screen(v: View) -> dict[str, Any]:
    """The answer, before any detail: both accuracies and the difference with its interval as
    big numbers, how many seeds stand behind them, the seed report next to this study, the
    curves, the tracked failures and the cost line."""
    sb = v.seeds_block
    if v.seed_level:
        a, b = fmt_pct(sb.mean_a), fmt_pct(sb.mean_b)
        sub_a = (f"mean of {v.n_seeds} seeds ± {fmt_points(sb.std_a)}"
                 if num(sb.std_a) is not None else f"mean of {v.n_seeds} seeds")
        sub_b = (f"mean of {v.n_seeds} seeds ± {fmt_points(sb.std_b)}"
                 if num(sb.std_b) is not None else f"mean of {v.n_seeds} seeds")
        diff = sb.mean_diff
        lo, hi = sb.ci
        covers = f"paired t across {v.n_seeds} seeds: covers training seeds and test images"
    else:
        a, b = fmt_pct(v.bt.top1), fmt_pct(v.vt.top1)
        sub_a = sub_b = "one trained model"
        diff, lo, hi = v.diff, v.acc.lo, v.acc.hi
        covers = "paired Wald: covers test-image sampling only"
    n = v.n_seeds if v.seed_level else 1
    lvl = num((sb if v.seed_level else v.acc).level) or 0.95
    ci = (f"{lvl * 100:g}% CI [{fmt_points(lo)}, {fmt_points(hi)}]"
          if num(lo) is not None and num(hi) is not None else "no interval")
    if n >= 2:
        badge, warn = f"{n} seeds", False
        badge_note = "training noise measured across seeds"
    else:
        badge, warn = "1 seed", True
        badge_note = "training noise not measured: rerun with --seeds 3"
    verdict = (verdict_lead(v.decision()) if v.seed_level
               else "Nothing is concluded about the change yet (one trained pair)")
    sr = SEED_REPORT
    rep_rows = [
        ["Baseline", fmt_pct(sr["baseline_top1"]), a],
        ["Variant", fmt_pct(sr["variant_top1"]), b],
        ["Change (points)", fmt_points(sr["diff"], signed=True),
         f"{fmt_points(diff, signed=True)} [{fmt_points(lo)}, {fmt_points(hi)}]"
         if num(lo) is not None else fmt_points(diff, signed=True)],
    ]
    return {
        "baseline": a, "variant": b, "sub_a": sub_a, "sub_b": sub_b,
        "diff": fmt_points(diff, signed=True) + " points" if num(diff) is not None else NA,
        "ci": ci, "covers": covers, "badge": badge, "badge_warn": warn,
        "badge_note": badge_note, "verdict": verdict, "change": v.change_text,
        "headline": _cap(v.accuracy_change()) + ".",
        "replication": table_block(["", "Seed report", "This study"], rep_rows, align="lrr",
                              caption="Test accuracy: the seed report and this study"),
        "replication_text": _replication_text(v),
        "figures": v.first_figs,
        "cost": (f"Baseline: {fmt_int(v.base.params)} parameters, "
                 f"{fmt_flops(v.base.flops)} per image; variant: "
                 f"{fmt_int(v.var.params)} parameters, {fmt_flops(v.var.flops)}. "
                 + describe_cost(to_json(v.base), to_json(v.var), v.ckey, v.word())),
        "ablation": first_screen_ablation(v),
        "warnings": curve_warnings(v),
        "robustness": first_screen_line(v),  # study --robustness, else None
    }


def headline(summary: StudySummary, study_dir: Path) -> str:
    """The study's verdict in one sentence, the same words as the report's headline: what
    `cifarlens study` and `demo` print when they finish."""
    v = View(summary, study_dir)
    text = f"{v.change_text}: {v.accuracy_change()}."
    if v.generated:
        text += f" (generated data, not {v.dataset})"
    return clean_text(text)
