"""The report's verdict paragraphs that read issue 22's records through the View: calibration
from the seed-level ECE test with ECE intervals, superclasses from the clustered test, whose
Grad-CAM maps a sentence describes, attribution qualified by convergence, and the seed-level
extras (P(variant > baseline), where the variance comes from, the sequential rule's looks)."""

from __future__ import annotations

from typing import Any

from cifarlens.report.blocks import Block, note_block, paragraph, table_block
from cifarlens.report.formats import _cap, _s, fmt_pct, fmt_points, num
from cifarlens.report.verdicts import (
    describe_attribution,
    describe_calibration_verdict,
    describe_ece_intervals,
    describe_noise,
    describe_prob_improvement,
    describe_sequential,
    describe_superclass_clustered,
    margin_text,
    points_text,
)
from cifarlens.report.view import View
from cifarlens.study.schema import Superclass, to_json


def calibration_text(v: View) -> str:
    """A calibration change, concluded only from the seed-level paired test of ECE."""
    es = v.comp.ece_seeds
    return describe_calibration_verdict(to_json(es) if es else None, v.bt.ece, v.vt.ece,
                                        v.pair_seed)


def ece_interval_blocks(v: View) -> list[Block]:
    """Each model's ECE before and after scaling with its bootstrap interval (seed s0)."""
    out: list[Block] = []
    for name, m in (("baseline", v.base), ("variant", v.var)):
        iv = m.calibration.intervals
        if iv is not None:
            out.append(paragraph(describe_ece_intervals(name, to_json(iv), m.seed)))
    return out


def superclass_text(name: str, sc: Superclass) -> str:
    """The superclass sentence: the clustered test's conclusion, or, for a summary without it,
    the numbers and no conclusion (the binomial test treats clustered errors as independent)."""
    if sc.cluster is not None:
        return describe_superclass_clustered(name, to_json(sc.cluster), sc.coarse_accuracy)
    share, chance = fmt_pct(sc.within_superclass_share), fmt_pct(sc.chance_share)
    return (f"The {name} puts the right superclass on {fmt_pct(sc.coarse_accuracy)} of test "
            f"images; {share} of its errors stay inside the true superclass, against {chance} "
            "for a uniformly random wrong class. No test that allows for errors clustering by "
            "class was computed, so nothing is concluded about a preference for related "
            "classes.")


def _cluster_ci(sc: Superclass) -> str:
    ci = sc.cluster.share_ci if sc.cluster is not None else None
    return f"{fmt_pct(ci[0])} to {fmt_pct(ci[1])}" if ci else "not computed"


def superclass_blocks(scs: list[tuple[str, Superclass | None]]) -> list[Block]:
    """The superclass table (with the cluster-bootstrap interval of the share) and a sentence
    per model."""
    rows = [[_cap(n), fmt_pct(sc.coarse_accuracy), fmt_pct(sc.within_superclass_share),
             _cluster_ci(sc), fmt_pct(sc.chance_share)] for n, sc in scs if sc]
    out: list[Block] = [table_block(
        ["Model", "Coarse accuracy", "Errors within superclass", "95% interval",
         "Chance share"], rows, align="lrrrr",
        caption="Errors whose prediction stays in the true superclass, against a uniformly "
                "random wrong class (interval: percentile bootstrap over true classes, all of "
                "a class's errors resampled together)")]
    out += [paragraph(superclass_text(n, sc)) for n, sc in scs if sc]
    return out


def maps_of(v: View) -> str | None:
    """Whose Grad-CAM maps the faithfulness and border sentences describe: 'baseline (seed 0)'."""
    ex = v.explain
    if ex is None or ex.model is None:
        return None
    return f"{ex.model} (seed {_s(ex.seed)})" if ex.seed is not None else ex.model


def attribution_text(v: View) -> str:
    """'Any difference is attributable to it', qualified when the runs had not converged."""
    conv = v.s.convergence
    return describe_attribution(v.ckey, v.change.baseline, v.change.variant,
                                conv.converged if conv else None, v.cfg.get("epochs"),
                                checked=conv is not None)


def seed_detail_blocks(v: View) -> list[Block]:
    """Next to the t interval: P(variant > baseline), the seed-level SD against the
    test-sampling SD, and the --seeds auto rule's looks."""
    sb = v.seeds_block
    if sb is None:
        return []
    out: list[Block] = []
    if sb.prob_improvement is not None:
        out.append(paragraph(describe_prob_improvement(to_json(sb.prob_improvement))))
    if sb.noise is not None:
        out.append(paragraph(describe_noise(to_json(sb.noise))))
    if sb.sequential is not None:
        seq = sb.sequential
        hist = seq.history
        if hist:
            out.append(paragraph(describe_sequential(to_json(hist[-1]), seq.max_seeds)))
        out.append(table_block(
            ["Look", "Seeds", "Mean difference (points)", "Boundary |t|", "t",
             "Repeated 95% CI", "Decision"],
            [[str(x.look), str(x.n), fmt_points(x.mean_diff, signed=True),
              _num2(x.boundary), _num2(x.t), _rci(x), x.decision] for x in hist],
            align="rrrrrrl", caption="Every look of --seeds auto (a wave of "
            f"{seq.wave} seed pair{'s' if seq.wave != 1 else ''} between looks)"))
    vs = v.s.verdicts
    if vs is not None:
        vary = ", ".join(vs.vary) or "none"
        out.append(note_block(
            f"Verdict settings: equivalence margin {margin_text(vs.margin)}; the power sentence "
            f"plans for {points_text(vs.detect)} at {vs.power:.0%} power and a two-sided "
            f"{vs.alpha * 100:g}% test; seeds {vs.seeds}"
            + (f" (at most {vs.max_seeds})" if vs.max_seeds else "")
            + f"; sources of randomness that differ between seeds: {vary}."))
    return out


def _num2(x: Any) -> str:
    f = num(x)
    return "n/a" if f is None else f"{f:.2f}"


def _rci(x: Any) -> str:
    if num(x.lo) is None or num(x.hi) is None:
        return "n/a"
    return f"[{fmt_points(x.lo)}, {fmt_points(x.hi)}]"
