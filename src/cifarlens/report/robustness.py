"""The report's robustness section (`cifarlens study --robustness`): per corruption family and
overall, variant minus baseline in accuracy under corruption across seeds, each arm's mCE, the
figure, the tracked failures' corrupted versions, and the first screen's line.

The sentence builders are pure functions of the JSON form of the summary's parts
(`to_json(variant.robustness)`, `to_json(summary.robustness)`), checked on constructed cases.
Their verdicts are the producer's (`analysis.power.decide` with Holm-adjusted p-values,
as the ablation's): "helped" is said "more robust", "hurt" "less robust".
"""

from __future__ import annotations

from typing import Any

from cifarlens.report.blocks import (
    Block,
    bullet_list,
    heading,
    note_block,
    paragraph,
    table_block,
)
from cifarlens.report.constants import ALPHA, NA, STATUS_SHORT
from cifarlens.report.formats import (
    _alpha_text,
    _cap,
    _d,
    _l,
    _s,
    change_text,
    fmt_float,
    fmt_int,
    fmt_p,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)
from cifarlens.report.view import View
from cifarlens.study.schema import to_json

FAMILY_TEXT = {"noise": "noise", "blur": "blur", "weather": "weather",
               "digital": "digital corruptions"}
FAMILY_ORDER = ("noise", "blur", "weather", "digital")


def _noise(n_images: Any) -> str:
    return (f"training seeds, on one fixed set of {fmt_int(n_images)} test images (every run "
            "sees the same corrupted images, so test-image sampling is not covered)")


def _where(family: str | None, n_corruptions: Any = None) -> str:
    if family is None:
        k = fmt_int(n_corruptions) if num(n_corruptions) is not None else "the"
        return f"the {k} corruptions overall" if k != "the" else "the corruptions overall"
    return FAMILY_TEXT.get(family, _s(family))


def describe_robustness_test(test: dict[str, Any], family: str | None = None, *,
                             n_corruptions: Any = None, alpha: float = ALPHA) -> str:
    """One family's (or, with family None, every corruption's) verdict as the clean verdict is
    said: 'more robust to noise: +2.10 points [0.40, 3.80] across 5 seeds, paired t p = 0.03,
    Holm p = 0.04', 'no detectable difference under blur: ...; with these seeds only a mean
    difference beyond ±h points would have been significant (unadjusted)', or, with one seed
    or no seed-to-seed variance, the numbers and why there is no test."""
    t = _d(test)
    where = _where(family, n_corruptions)
    diff = f"{fmt_points(t.get('mean_diff'), signed=True)} points"
    lo, hi = num(t.get("lo")), num(t.get("hi"))
    ci = f" [{fmt_points(lo)}, {fmt_points(hi)}]" if lo is not None and hi is not None else ""
    n = fmt_int(t.get("n_seeds"))
    fromto = f"({fmt_pct(t.get('mean_a'))} → {fmt_pct(t.get('mean_b'))})"
    ps = f"paired t {p_clause(t.get('p_value'))}"
    if num(t.get("p_holm")) is not None:
        ps += f", Holm {p_clause(t.get('p_holm'))}"
    verdict = t.get("verdict")
    if verdict in ("helped", "hurt"):
        word = "more" if verdict == "helped" else "less"
        return (f"{word} robust to {where}: {diff}{ci} across {n} seeds {fromto}, {ps}, below "
                f"{alpha:g}")
    if verdict == "no detectable difference":
        text = f"no detectable difference under {where}: {diff}{ci} across {n} seeds {fromto}, {ps}"
        if lo is not None and hi is not None:
            text += (f"; with these seeds only a mean difference beyond ±"
                     f"{fmt_points((hi - lo) / 2)} points would have been significant "
                     "(unadjusted)")
        return text
    if num(t.get("n_seeds")) == 1:
        return (f"under {where}: {diff} {fromto} for one trained pair; with one seed per arm "
                "there is no seed-level test, so nothing is concluded")
    why = _s(t.get("note"), "no test could be run")
    return f"under {where}: {diff} across {n} seeds {fromto}; not tested ({why})"


def describe_mce(comp: dict[str, Any]) -> str:
    """Each arm's mCE and the variant's relative mCE with the baseline arm as normaliser."""
    c = _d(comp)
    mce, rel = _d(c.get("mce")), _d(c.get("relative_mce_normalised"))
    text = (f"mean corruption error (mCE, unnormalised, mean over seeds): baseline "
            f"{fmt_pct(mce.get('baseline'))}, variant {fmt_pct(mce.get('variant'))}")
    if num(rel.get("mce_mean")) is not None:
        text += (f"; normalised by the baseline arm (1.00 = its level), the variant's mCE is "
                 f"{fmt_float(rel.get('mce_mean'), 2)} and its relative mCE (degradation from "
                 f"clean) {fmt_float(rel.get('mean'), 2)}")
    return text + (". AlexNet's errors, ImageNet-C's normaliser, are not available for these "
                   "images, so no AlexNet-normalised mCE is given")


def describe_setup(setup: dict[str, Any], n_seeds: Any) -> str:
    """What was run, with the source line every robustness output carries."""
    s = _d(setup)
    sevs = ", ".join(_s(x) for x in _l(s.get("severities")))
    held = _l(s.get("held_out"))
    text = (f"Every run of both arms ({fmt_int(n_seeds)} seed{'s' * (num(n_seeds) != 1)} each) "
            f"was evaluated on the same {fmt_int(s.get('n_images'))} class-balanced test images "
            f"under {fmt_int(len(_l(s.get('corruptions'))))} corruptions at severit"
            f"{'ies' if len(_l(s.get('severities'))) != 1 else 'y'} {sevs}"
            + (f" (and {len(held)} held out: {', '.join(_s(h) for h in held)}, not in the mCE)"
               if held else "")
            + f" on {_s(s.get('device'), 'the evaluation device')}: {_s(s.get('source'))}. "
            f"Definitions and constants: {_s(s.get('reference'))}.")
    stand = _d(s.get("stand_ins"))
    if stand:
        text += " Documented stand-ins: " + "; ".join(f"{_s(k)}: {_s(v)}"
                                                      for k, v in stand.items()) + "."
    return text


def describe_failures_under_corruption(rows: list[dict[str, Any]]) -> str:
    """How the tracked failures fare on their corrupted versions: of those the variant fixes
    on clean images, how many it keeps right under every corruption, and the share of
    corrupted versions each model gets right."""
    rows = [r for r in _l(rows) if isinstance(_d(r).get("corruption"), dict)]
    if not rows:
        return "The tracked failures were not evaluated under corruption."
    n = _d(rows[0]["corruption"]).get("conditions")
    fixed = [r for r in rows if _d(r.get("variant")).get("status") == "fixed"]
    total = sum(num(_d(r["corruption"]).get("conditions")) or 0 for r in rows)
    share_b = sum(num(_d(r["corruption"]).get("baseline_right")) or 0 for r in rows) / total \
        if total else None
    share_v = sum(num(_d(r["corruption"]).get("variant_right")) or 0 for r in rows) / total \
        if total else None
    text = (f"On the {fmt_int(n)} corrupted versions of each of the {len(rows)} tracked "
            f"failures, the baseline is right on {fmt_pct(share_b)} and the variant on "
            f"{fmt_pct(share_v)}")
    if fixed:
        kept = sum(1 for r in fixed if _d(r["corruption"]).get("variant_right")
                   == _d(r["corruption"]).get("conditions"))
        text += (f"; of the {len(fixed)} the variant fixes on the clean image, it stays right "
                 f"under every corruption on {kept} and gets worse under corruption on "
                 f"{len(fixed) - kept}")
    else:
        text += "; the variant fixes none of them on the clean image"
    return text + " (one pair of trained models, the first seed's; numbers only, no test)."


def robustness_line(comp: dict[str, Any], setup: dict[str, Any]) -> str:
    """The first screen's one line."""
    c, s = _d(comp), _d(setup)
    overall = describe_robustness_test(_d(c.get("overall")), None,
                                       n_corruptions=len(_l(s.get("corruptions"))))
    mce = _d(c.get("mce"))
    return (f"Robustness ({fmt_int(s.get('n_images'))} test images, corruptions computed "
            f"locally): {overall}; mCE baseline {fmt_pct(mce.get('baseline'))}, variant "
            f"{fmt_pct(mce.get('variant'))}.")


def first_screen_line(v: View) -> str | None:
    if v.s.robustness is None or v.main.robustness is None:
        return None
    return robustness_line(to_json(v.main.robustness), to_json(v.s.robustness))


def ablation_mce(v: View) -> dict[str, str] | None:
    """Each change's mCE cell for the ablation table (slug -> text), or None without
    robustness."""
    if v.s.robustness is None:
        return None
    return {var.slug: fmt_pct(var.robustness.mce.variant) if var.robustness else NA
            for var in v.s.variants}


def _table(comp: dict[str, Any], setup: dict[str, Any]) -> Block:
    fams = _d(comp.get("families"))
    per_family = {}
    for name, fam in _d(setup.get("families")).items():
        if name in _l(setup.get("corruptions")):
            per_family.setdefault(fam, []).append(name)
    rows = []
    for f in [f for f in FAMILY_ORDER if f in fams] + [f for f in fams if f not in FAMILY_ORDER]:
        rows.append(_row(_cap(_s(f)), ", ".join(per_family.get(f, [])), _d(fams[f])))
    rows.append(_row("All", f"{len(_l(setup.get('corruptions')))} corruptions",
                     _d(comp.get("overall"))))
    return table_block(
        ["Family", "Corruptions", "Baseline", "Variant", "Difference, points [95% CI]",
         "p (paired t)", f"p (Holm, {len(fams)} families)", "Verdict"], rows,
        align="llrrrrrl",
        highlight={i for i, r in enumerate(rows) if r[-1] in ("more robust", "less robust")},
        caption="Accuracy under corruption (mean over the corruptions and severities run, "
                "then over seeds); the difference is variant minus baseline, paired by seed")


def _row(label: str, names: str, t: dict[str, Any]) -> list[str]:
    lo, hi = num(t.get("lo")), num(t.get("hi"))
    ci = f" [{fmt_points(lo)}, {fmt_points(hi)}]" if lo is not None and hi is not None else ""
    verdict = {"helped": "more robust", "hurt": "less robust"}.get(t.get("verdict"),
                                                                    _s(t.get("verdict")))
    return [label, names, fmt_pct(t.get("mean_a")), fmt_pct(t.get("mean_b")),
            fmt_points(t.get("mean_diff"), signed=True) + ci, fmt_p(t.get("p_value")),
            fmt_p(t.get("p_holm")), verdict]


def _failures_table(rows: list[Any]) -> Block:
    body = []
    for f in rows:
        c = f.corruption
        fixed = f.variant.status == "fixed"
        worse = ("yes" if fixed and c.variant_right < c.conditions else
                 "no" if fixed else "already wrong")
        body.append([_s(f.rank), _s(f.index), _s(f.true_name),
                     STATUS_SHORT.get(f.variant.status, _s(f.variant.status)),
                     f"{fmt_int(c.baseline_right)}/{fmt_int(c.conditions)}",
                     f"{fmt_int(c.variant_right)}/{fmt_int(c.conditions)}", worse])
    return table_block(
        ["Rank", "Index", "True", "Variant on the clean image", "Baseline right (corrupted)",
         "Variant right (corrupted)", "Variant worse under corruption"], body,
        align="rrllrrl", caption="Each tracked failure's corrupted versions (every corruption "
                                 "and severity run), the first seed's pair")


def sec_robustness(v: View) -> list[Block] | None:
    """Robustness to common corruptions (only in a study run with --robustness)."""
    if v.s.robustness is None or v.main.robustness is None:
        return None
    setup, comp = to_json(v.s.robustness), to_json(v.main.robustness)
    out: list[Block] = [paragraph(describe_setup(setup, comp.get("n_seeds")))]
    fams = [f for f in FAMILY_ORDER if f in comp["families"]]
    lines = [describe_robustness_test(comp["families"][f], f) for f in fams]
    lines.append(describe_robustness_test(comp["overall"], None,
                                          n_corruptions=len(setup["corruptions"])))
    out.append(bullet_list([_cap(x) + "." for x in lines]))
    out.append(note_block(
        f"The intervals and tests cover {_noise(comp.get('n_images'))}. The {len(fams)} "
        f"corruption families are one family of tests, Holm-adjusted (a verdict needs the adjusted p below "
        f"{_alpha_text(num(comp.get('alpha')) or ALPHA)} and the 95% interval on one side of "
        "0); the overall test is a single test, not adjusted. Intervals are not adjusted."))
    out.append(_table(comp, setup))
    out.append(paragraph(_cap(describe_mce(comp)) + "."))
    out += v.figs("robustness", "robustness")
    tracked = [f for f in v.top if f.corruption is not None]
    if tracked:
        out.append(heading("Tracked failures under corruption"))
        out.append(paragraph(describe_failures_under_corruption(
            [to_json(f) for f in tracked])))
        out.append(_failures_table(tracked))
    for var in v.s.variants[1:]:
        if var.robustness is None:
            continue
        c = var.change
        overall = describe_robustness_test(to_json(var.robustness.overall), None,
                                           n_corruptions=len(setup["corruptions"]))
        out.append(paragraph(f"{change_text(c.key, c.baseline, c.variant)}: {overall}; "
                             f"{describe_mce(to_json(var.robustness))}."))
        out += [{"type": "figure", "fig": f} for f in v.placed["robustness"]
                if f.key == f"robustness_{var.slug}"]
    return out
