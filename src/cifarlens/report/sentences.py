"""Generated sentences: each conclusion the report states, built from the numbers by a small pure helper."""


from __future__ import annotations

from typing import Any

from cifarlens._defaults import canonical_model_name
from cifarlens.report.constants import ALPHA, NA, UNSET
from cifarlens.report.formats import (
    _alpha_text,
    _cap,
    _d,
    _diff,
    _l,
    _s,
    clean_text,
    dataset_title,
    fmt_auc,
    fmt_float,
    fmt_int,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)
from cifarlens.study.schema import StudySummary

# --------------------------------------------------------------------------- generated sentences


def change_verdict(diff: Any, lo: Any, hi: Any, p: Any, alpha: float = ALPHA) -> str:
    """'rose' / 'fell' (significant by every available criterion), 'no_change' (not significant
    by any, or 0.00 points as shown), 'borderline' (p and CI disagree) or 'unknown' (no test).

    Significant means p < alpha and a confidence interval that excludes 0; when only one of
    the two is available, that one decides.
    """
    d = num(diff)
    if d is None:
        return "unknown"
    if fmt_points(abs(d)) == "0.00":
        return "no_change"
    pv, lo_f, hi_f = num(p), num(lo), num(hi)
    votes = []
    if pv is not None:
        votes.append(pv < alpha)
    if lo_f is not None and hi_f is not None:
        votes.append(lo_f > 0 or hi_f < 0)
    if not votes:
        return "unknown"
    if all(votes):
        return "rose" if d > 0 else "fell"
    if not any(votes):
        return "no_change"
    return "borderline"


def describe_change(
    diff: Any,
    ci: tuple[Any, Any],
    p: Any,
    alpha: float = ALPHA,
    *,
    metric: str = "test accuracy",
    test: str = "McNemar's exact test",
    level: Any = 0.95,
    means: tuple[Any, Any] = (None, None),
) -> str:
    """One clause stating a change in an accuracy-like fraction, its CI `(lo, hi)` and its
    test; `means` (before, after) adds "from X to Y".

    e.g. "test accuracy rose by 6.63 points (95% CI [5.80, 7.40]); McNemar's exact test
    p = 3.0e-12, significant at the 5% level". Direction comes from the sign of ``diff``;
    significance from ``change_verdict``.
    """
    lo, hi = ci
    before, after = means
    d = num(diff)
    if d is None:
        return f"the change in {metric} was not computed"
    lvl = num(level) or 0.95
    has_ci = num(lo) is not None and num(hi) is not None
    ci = f"{lvl * 100:g}% CI [{fmt_points(lo)}, {fmt_points(hi)}]" if has_ci else None
    pt = f"{test} {p_clause(p)}" if num(p) is not None else None
    fromto = (
        f" from {fmt_pct(before)} to {fmt_pct(after)}"
        if num(before) is not None and num(after) is not None
        else ""
    )
    verdict = change_verdict(d, lo, hi, p, alpha)
    size = fmt_points(abs(d))
    direction = "rose" if d > 0 else "fell"
    at = f"significant at the {_alpha_text(alpha)} level"
    if verdict in ("rose", "fell"):
        parts = f" ({ci})" if ci else ""
        tail = f"; {pt}, {at}" if pt else f", {at} (the interval excludes 0)"
        return f"{metric} {verdict} by {size} points{fromto}{parts}{tail}"
    if verdict == "no_change":
        inner = "; ".join(x for x in (f"difference {fmt_points(d, signed=True)} points", ci, pt)
                          if x)
        return f"{metric} did not change significantly{fromto} ({inner})"
    if verdict == "borderline":
        if num(p) is not None and num(p) < alpha:  # type: ignore[operator]
            why = f"{pt} is below {alpha:g}, but the {ci} includes 0"
        else:
            why = f"the {ci} excludes 0, but {pt} is not below {alpha:g}"
        return (f"{metric} {direction} by {size} points{fromto}; {why}, so the evidence is "
                f"borderline, not significant at the {_alpha_text(alpha)} level")
    return (f"{metric} {direction} by {size} points{fromto} (no significance test or "
            "confidence interval was computed, so it is unknown whether this is more than noise)")


def _compare_word(before: str, after: str, lower: str, higher: str, same: str) -> str:
    """Direction decided on the numbers as shown, so '6.00% -> 6.00%' is never 'lowered'."""
    if before == NA or after == NA:
        return ""
    b, a = float(before.rstrip("%")), float(after.rstrip("%"))
    return same if a == b else (lower if a < b else higher)


def describe_temperature(name: str, cal: dict[str, Any]) -> str:
    """What temperature scaling did to one model, e.g. 'baseline: T = 1.40 > 1, so the raw
    model was overconfident; scaling lowered test ECE from 6.00% to 2.00% and NLL from ...'."""
    t = num(cal.get("temperature"))
    if t is None:
        return f"Temperature scaling was not computed for the {name}."
    ts = fmt_float(t, 2)
    if ts == "1.00":
        kind = "T = 1.00, so the raw model was already calibrated on average"
    elif t > 1:
        kind = f"T = {ts} > 1, so the raw model was overconfident (scaling softens it)"
    else:
        kind = f"T = {ts} < 1, so the raw model was underconfident (scaling sharpens it)"
    parts = []
    for key, label, f in (("ece", "test ECE", fmt_pct), ("nll", "test NLL", fmt_float)):
        b, a = f(cal.get(f"{key}_before")), f(cal.get(f"{key}_after"))
        word = _compare_word(b, a, "lowered", "raised", "left unchanged")
        if word:
            parts.append(f"{word} {label} from {b} to {a}" if word != "left unchanged"
                         else f"left {label} unchanged at {a}")
    effect = "; scaling " + " and ".join(parts) if parts else ""
    return f"For the {name}, the fitted temperature is {kind}{effect}."


MCE_MIN_COUNT = 30  # = metrics.MCE_MIN_COUNT; the report stays free of numpy imports


def describe_mce(cases: list[tuple[str, dict[str, Any], str]]) -> str:
    """Which MCEs rest on a bin too small to mean much (fewer than MCE_MIN_COUNT images)."""
    small = []
    for name, c, when in cases:
        k = num(c.get(f"mce_count_{when}"))
        m = num(c.get(f"mce_{when}"))
        if k is not None and m is not None and k < MCE_MIN_COUNT:
            small.append(f"the {name}'s {fmt_pct(m)} {when} scaling ({fmt_int(k)} image"
                         f"{'' if k == 1 else 's'})")
    lead = ("MCE is the largest accuracy-confidence gap over 15 bins, so it is set by a single "
            "bin; the table gives that bin's size.")
    if not any(num(c.get(f"mce_count_{w}")) is not None for _, c, w in cases):
        return lead + " The bin sizes were not recorded, so the MCEs cannot be judged."
    if not small:
        return lead + f" Every MCE here comes from a bin of at least {MCE_MIN_COUNT} images."
    return (lead + f" Read these as noise, not as calibration: {'; '.join(small)} come from "
            f"a bin with fewer than {MCE_MIN_COUNT} images.")


def describe_calibration_change(ece_a: Any, ece_b: Any, ece_change: Any = None) -> str:
    """Whether the variant is better or worse calibrated than the baseline (lower ECE = better)."""
    a, b = fmt_pct(ece_a), fmt_pct(ece_b)
    if a != NA and b != NA:
        word = _compare_word(a, b, "lower", "higher", "the same")
        if word == "the same":
            return f"Calibration did not change: both models have a test ECE of {a}."
        verdict = "better" if word == "lower" else "worse"
        diff = fmt_points(abs(num(ece_b) - num(ece_a)))  # type: ignore[operator]
        return (f"The variant's test ECE is {diff} points {word} than the baseline's "
                f"({b} vs {a}): it is {verdict} calibrated before temperature scaling.")
    c = num(ece_change)
    if c is not None:
        if fmt_points(abs(c)) == "0.00":
            return "Calibration did not change (ECE difference 0.00 points)."
        return (f"The variant's test ECE is {fmt_points(abs(c))} points "
                f"{'lower' if c < 0 else 'higher'} than the baseline's: it is "
                f"{'better' if c < 0 else 'worse'} calibrated.")
    return "The calibration comparison was not computed."


def describe_tracking(tracking: dict[str, Any]) -> str:
    """Top-K tracking with its base rate and the suspected label errors apart. Numbers only:
    nothing is tested here, so nothing is concluded."""
    n = num(tracking.get("tracked"))
    if not n:
        return "No baseline failures were tracked through the variant."
    fixed, still, other = (int(num(tracking.get(k)) or 0)
                           for k in ("fixed", "still_wrong", "other_wrong"))
    out = (f"Of the {int(n)} most confident baseline failures tracked, the variant fixed {fixed} "
           f"({fmt_pct(fixed / n)}), kept the same wrong prediction for {still} and changed "
           f"{other} to another wrong class.")
    base = _d(tracking.get("all_errors"))
    be, bf = num(base.get("errors")), num(base.get("fixed"))
    if be and bf is not None:
        out += (f" For comparison, it gets right {fmt_int(bf)} of all {fmt_int(be)} baseline "
                f"test errors ({fmt_pct(bf / be)}), the base rate.")
    ls, ot = _d(tracking.get("label_suspects")), _d(tracking.get("others"))
    nl, no = num(ls.get("tracked")), num(ot.get("tracked"))
    if nl:
        out += (f" {fmt_int(nl)} of the {int(n)} tracked {'is a' if nl == 1 else 'are'} "
                f"suspected label error{'' if nl == 1 else 's'}, where "
                f"\"fixed\" means agreeing with a probably wrong label: the variant did so for "
                f"{fmt_int(ls.get('fixed'))}.")
        if no:
            of = int(num(ot.get("fixed")) or 0)
            out += (f" On the other {fmt_int(no)} it fixed {of} ({fmt_pct(of / no)}).")
        else:
            out += " None of the tracked failures is free of that suspicion."
    elif nl is not None and no:
        out += " None of them is a suspected label error."
    return out


def describe_superclass(name: str, sc: dict[str, Any], alpha: float = ALPHA) -> str:
    """Superclass error share against chance. "Favour" only when the exact binomial test of the
    within-superclass count against the chance share rejects at `alpha`; otherwise numbers only."""
    share, chance = num(sc.get("within_superclass_share")), num(sc.get("chance_share"))
    coarse = fmt_pct(sc.get("coarse_accuracy"))
    lead = f"The {name} puts the right superclass on {coarse} of test images"
    if share is None or chance is None:
        return lead + "; the within-superclass error share was not computed."
    k, n = num(sc.get("errors_within_superclass")), num(sc.get("errors"))
    count = f" ({fmt_int(k)} of {fmt_int(n)})" if k is not None and n else ""
    ci = _l(sc.get("share_ci"))
    ci_txt = (f", 95% CI {fmt_pct(ci[0])} to {fmt_pct(ci[1])}"
              if len(ci) == 2 and None not in (num(ci[0]), num(ci[1])) else "")
    facts = (f"{lead}. {fmt_pct(share)}{count} of its errors stay inside the true superclass"
             f"{ci_txt}, against {fmt_pct(chance)} for a uniformly random wrong class")
    p = num(sc.get("binomial_p"))
    if p is None:
        return (f"{facts}; no test of the difference was computed, so these are numbers only.")
    test = f"exact binomial test {p_clause(p)}, over the sampling of test images"
    if p >= alpha:
        return (f"{facts} ({test}): not distinguishable from chance at the "
                f"{_alpha_text(alpha)} level, so no preference for related classes is shown.")
    ratio = f"{share / chance:.1f}× " if chance > 0 else ""
    if share > chance:
        return (f"{facts} ({test}): errors favour related classes, {ratio}as often as chance.")
    return (f"{facts} ({test}): errors fall inside the true superclass less often than chance.")


def _ci_text(d: dict[str, Any], level: Any) -> str:
    lvl = num(level) or 0.95
    return (f"{lvl * 100:g}% CI [{fmt_auc(d.get('lo'))}, {fmt_auc(d.get('hi'))}]")


def _faith_one(kind: str, comp: dict[str, Any], level: Any) -> tuple[str, str]:
    """('better' | 'worse' | 'same' | 'untested', clause) for Grad-CAM vs one baseline on one
    measure, decided by whether the CI of (Grad-CAM - baseline) excludes 0."""
    d = _d(comp.get(f"{kind}_diff"))
    diff, lo, hi = num(d.get("diff")), num(d.get("lo")), num(d.get("hi"))
    if diff is None:
        return "untested", f"Grad-CAM's {kind} AUC against it was not computed"
    if lo is None or hi is None:
        return "untested", (f"Grad-CAM's {kind} AUC differs from it by "
                            f"{fmt_auc(diff)} (no interval: too few images)")
    ci = _ci_text(d, level)
    if lo > 0 or hi < 0:
        lower = hi < 0
        good = lower if kind == "deletion" else not lower
        return ("better" if good else "worse",
                f"Grad-CAM's {kind} AUC is {fmt_auc(abs(diff))} "
                f"{'lower' if lower else 'higher'} ({ci})")
    return "same", (f"Grad-CAM's {kind} AUC is not distinguishable from it "
                    f"(difference {fmt_auc(diff)}, {ci})")


def describe_faithfulness(faith: dict[str, Any], tests: dict[str, Any] | None = None) -> str:
    """Grad-CAM's deletion/insertion AUCs against i.i.d. noise, a smooth random map at the
    layer's resolution and a centre prior, concluding only what the paired bootstrap CIs over
    the images support (lower deletion and higher insertion are better)."""
    g = _d(faith.get("gradcam"))
    gd, gi = num(g.get("deletion_auc")), num(g.get("insertion_auc"))
    t = _d(tests)
    comps = _d(t.get("comparisons"))
    if gd is None or gi is None:
        return "The deletion/insertion faithfulness check was not computed."
    lead = (f"Deleting pixels in Grad-CAM order gives a deletion AUC of {fmt_auc(gd)} (lower is "
            f"better) and inserting them an insertion AUC of {fmt_auc(gi)} (higher is better)")
    if not comps:
        r = _d(faith.get("random"))
        rd, ri = num(r.get("deletion_auc")), num(r.get("insertion_auc"))
        vs = (f", against {fmt_auc(rd)} and {fmt_auc(ri)} for i.i.d. random pixels"
              if rd is not None and ri is not None else "")
        return (f"{lead}{vs}. No interval and no smooth or centred baseline was computed, so "
                "these numbers do not show whether the maps point at evidence the model uses.")
    n, level = t.get("n"), t.get("level")
    verdicts: dict[str, dict[str, str]] = {}
    clauses = []
    for key in ("random", "smooth_random", "centre_prior"):
        comp = _d(comps.get(key))
        if not comp:
            continue
        verdicts[key] = {}
        parts = []
        for kind in ("deletion", "insertion"):
            verdicts[key][kind], clause = _faith_one(kind, comp, level)
            parts.append(clause)
        clauses.append(f"against the {_s(comp.get('name'))}: " + "; ".join(parts))
    noise = clean_text(t.get("noise")) if t.get("noise") else (
        f"test-image sampling over {fmt_int(n)} images")
    body = f"{lead}, on {fmt_int(n)} correctly classified test images. " + ". ".join(
        _cap(c) for c in clauses) + f" (intervals cover {noise})."
    strong = [k for k in ("smooth_random", "centre_prior") if k in verdicts]
    beats = {k: all(v == "better" for v in verdicts[k].values()) for k in verdicts}
    if not strong and beats.get("random"):
        verdict = ("Grad-CAM beats i.i.d. random pixels, but no smooth or centred baseline was "
                   "computed, so this check does not show that the maps point at "
                   "image-specific evidence")
    elif strong and all(beats[k] for k in strong) and beats.get("random", True):
        verdict = ("Grad-CAM beats every baseline on both measures, including the "
                   "input-independent centre prior, so these maps carry image-specific "
                   "evidence the model uses")
    elif beats.get("random") and not all(beats[k] for k in strong):
        verdict = ("Grad-CAM beats i.i.d. random pixels, but not a smooth or centred map "
                   "that knows nothing about the image on both measures, so this check does "
                   "not show that the maps point at image-specific evidence")
    elif any(v == "better" for d in verdicts.values() for v in d.values()):
        verdict = ("the evidence is mixed, so the maps should not be read as faithful "
                   "explanations on the strength of this check")
    else:
        verdict = ("Grad-CAM does not beat even i.i.d. random pixels, so the maps should not "
                   "be read as explanations of these predictions")
    return f"{body} {_cap(verdict)}."


def describe_border(bs: dict[str, Any], alpha: float = ALPHA) -> str:
    """Grad-CAM mass near the image border, failures vs correct predictions, against a uniform
    map and a centre prior. A difference is stated only when the permutation test rejects; it
    is never called background reliance when the layer's cells are wider than the band."""
    f, c, u, cp = (num(bs.get(k)) for k in ("failures", "correct", "uniform", "centre_prior"))
    px = bs.get("border_px")
    band = f"the outer {fmt_int(px)}-pixel band" if num(px) is not None else "the border band"
    if f is None or c is None:
        return "Grad-CAM mass near the image border was not computed."
    refs = []
    if u is not None:
        refs.append(f"{fmt_pct(u)} for a uniform map")
    if cp is not None:
        refs.append(f"{fmt_pct(cp)} for the centre prior")
    lead = (f"On failures, {fmt_pct(f)} of the Grad-CAM mass lies in {band}, against "
            f"{fmt_pct(c)} on correct predictions" + (f" ({', '.join(refs)})" if refs else ""))
    p = num(bs.get("p_value"))
    if p is None:
        cmp_ = "no test of the difference was computed, so these are numbers only"
    elif p < alpha:
        more = f > c
        cmp_ = (f"failures put {fmt_points(abs(f - c))} points {'more' if more else 'less'} of "
                f"their mass there than correct predictions ({p_clause(p)}, two-sided "
                "permutation test over test images)")
    else:
        cmp_ = (f"failures and correct predictions are not distinguishable ({p_clause(p)}, "
                "two-sided permutation test over test images)")
    cells = _l(bs.get("cells"))
    tail = ""
    if bs.get("resolves_border") is False or bs.get("resolves_border") is None:
        grid = (f"{_s(cells[0])}×{_s(cells[1])} " if len(cells) == 2 else "")
        tail = (f" This is not a measure of background reliance: the explained layer's "
                f"{grid}cells are wider than the band and each sees the whole image, so the "
                "share only says how much mass sits in the outer cells.")
    return f"{lead}: {cmp_}.{tail}"


def describe_seeds(seeds: dict[str, Any] | None, alpha: float = ALPHA,
                   seed_list: list[Any] | None = None) -> str:
    if not seeds:
        which = ", ".join(_s(s) for s in seed_list or []) or NA
        return (f"Multi-seed results were not computed: each model was trained once (seed "
                f"{which}), so the comparison does not include seed-to-seed variation.")
    n = seeds.get("n", seeds.get("n_seeds"))
    ci = _l(seeds.get("ci")) or [seeds.get("lo"), seeds.get("hi")]
    lo, hi = (ci + [None, None])[:2]

    def ms(m: Any, s: Any) -> str:
        return fmt_pct(m) + (f" ± {fmt_points(s)}" if num(s) is not None else "")

    lead = (f"Over {fmt_int(n)} seeds, the baseline reached "
            f"{ms(seeds.get('mean_a'), seeds.get('std_a'))} and the variant "
            f"{ms(seeds.get('mean_b'), seeds.get('std_b'))} test accuracy "
            "(mean ± sample std in points)")
    clause = describe_change(seeds.get("mean_diff"), (lo, hi), seeds.get("p_value"), alpha,
                             metric="the mean accuracy",
                             test=_t_test_name(_seed_n(seeds), seeds.get("df"))
                             if _seed_n(seeds) >= 2 else "the paired t-test")
    note = f" Note: {clean_text(seeds['note'])}." if seeds.get("note") else ""
    return f"{lead}; {clause}.{note}"


NOISE_PAIR = "test-image sampling only, for one pair of trained models"
NOISE_SEEDS = ("training seeds (split, initialization, data order, augmentation and dropout "
               "draws) and test-image sampling as it shows in each seed's accuracy")


def _seed_ci(seeds: dict[str, Any]) -> tuple[Any, Any]:
    ci = _l(seeds.get("ci")) or [seeds.get("lo"), seeds.get("hi")]
    lo, hi = (ci + [None, None])[:2]
    return lo, hi


def _seed_n(seeds: dict[str, Any] | None) -> int:
    n = num(_d(seeds).get("n", _d(seeds).get("n_seeds")))
    return int(n) if n is not None else 0


def _t_test_name(n: int, df: Any = None) -> str:
    d = int(num(df)) if num(df) is not None else n - 1
    dof = f"{d} degree{'s' if d != 1 else ''} of freedom"
    return (f"the paired t-test across {n} seeds ({dof}"
            + (": little power" if d == 1 else "") + ")")


def describe_seed_level(seeds: dict[str, Any], alpha: float = ALPHA) -> str:
    """The verdict about the change: the mean paired difference across seeds, its t interval
    (training seeds and test-image sampling) and the paired t-test, naming the seed count, e.g.
    'across 3 seeds, the mean test accuracy rose by 6.11 points from 63.01% to 69.12% (95% CI
    [5.11, 7.11]); the paired t-test across 3 seeds (2 degrees of freedom) p = 0.0013, ...'."""
    n = _seed_n(seeds)
    lo, hi = _seed_ci(seeds)
    clause = describe_change(seeds.get("mean_diff"), (lo, hi), seeds.get("p_value"), alpha,
                             metric="the mean test accuracy",
                             test=_t_test_name(n, seeds.get("df")),
                             level=seeds.get("level", 0.95),
                             means=(seeds.get("mean_a"), seeds.get("mean_b")))
    note = f"; {clean_text(seeds['note'])}" if seeds.get("note") and num(
        seeds.get("p_value")) is None else ""
    return f"across {fmt_int(n)} seeds, {clause}{note}"


def describe_pair(acc: dict[str, Any], mc: dict[str, Any], seed: Any = None,
                  before: Any = None, after: Any = None, alpha: float = ALPHA) -> str:
    """One pair of trained models compared on the test images: what it shows and what not."""
    which = f" (seed {_s(seed)})" if seed is not None else ""
    clause = describe_change(acc.get("diff", _diff(before, after)),
                             (acc.get("lo"), acc.get("hi")), mc.get("p_value"), alpha,
                             metric="test accuracy", level=acc.get("level", 0.95),
                             means=(before, after))
    n = fmt_int(mc.get("n"))
    on = f"these {n} test images" if n != NA else "these test images"
    return (f"for one trained model per arm{which}, {clause}. This compares two trained models "
            f"on {on} (its interval and test cover {NOISE_PAIR}) and is not yet evidence "
            "about the setting: nothing here measures how much another training seed would "
            "move the result. For evidence about the change, rerun with --seeds 3 (the "
            "default): the verdict then comes from the paired t-test across seeds")


# --- the seed report side by side -------------------------------------------------------------

# The seed report (DL Assignment-1, group 23): Table 1 (accuracy) and Table 2 (complexity).
SEED_REPORT: dict[str, Any] = {
    "baseline_top1": 0.6291, "variant_top1": 0.6954, "diff": 0.0663,
    "params": 10_462_756, "flops_text": "0.65 GFLOPs",
    "dataset": "cifar100", "change": ("augment", "none", "crop-flip"), "model": "vgg",
    "epochs": 50,
}


def replication_applies(s: StudySummary) -> list[str]:
    """Why this study's numbers cannot be set against the seed report's ([] = they can)."""
    why = []
    src, ds = s.data_source, s.dataset
    if src == "generated":
        why.append("the study ran on generated data, not CIFAR-100")
    elif src == "user":
        why.append(f"the study ran on {dataset_title(s)}, not CIFAR-100")
    if ds != SEED_REPORT["dataset"] and src != "user":
        why.append(f"the dataset is {_s(ds)}, not CIFAR-100")
    ch = s.main.change
    key, b, v = SEED_REPORT["change"]
    if (ch.key, ch.baseline, ch.variant) != (key, b, v):
        why.append(f"the change is {_s(ch.key)}: {_s(ch.baseline, UNSET)} → "
                   f"{_s(ch.variant, UNSET)}, not the seed's augment: none → crop-flip")
    cfg = s.config
    if canonical_model_name(cfg.get("model", SEED_REPORT["model"])) != SEED_REPORT["model"]:
        why.append(f"the model is {_s(cfg.get('model'))}, not the seed's baseline CNN")
    if cfg.get("epochs", SEED_REPORT["epochs"]) != SEED_REPORT["epochs"]:
        why.append(f"it trained {_s(cfg.get('epochs'))} epochs, not the seed's 50")
    if cfg.get("train_limit") is not None:
        why.append(f"it trained on a {_s(cfg.get('train_limit'))}-image subset, not the full "
                   "training split")
    return why


def _pts(x: float) -> float:
    return round(x * 100, 2)  # decisions on the numbers as shown (2 decimals, in points)


def replication_verdict(lo: Any, hi: Any, claim: Any = SEED_REPORT["diff"]) -> str:
    """Where the seed's claimed gain sits against this study's seed-level CI [lo, hi]:

    'reproduced': the claim lies inside the interval and the interval excludes 0;
    'inconclusive': the interval holds both the claim and 0 (too few seeds to tell);
    'exceeded': the whole interval lies above the claim;
    'smaller': the whole interval lies above 0 but below the claim (a gain, not the seed's);
    'not_reproduced': the interval lies below the claim and reaches 0 or below (no gain shown);
    'not_judged': no seed-level interval (one seed, or a constant difference).
    """
    lf, hf, c = num(lo), num(hi), num(claim)
    if lf is None or hf is None or c is None:
        return "not_judged"
    l_, h_, c_ = _pts(lf), _pts(hf), _pts(c)
    if l_ > c_:
        return "exceeded"
    if h_ < c_:
        return "smaller" if l_ > 0 else "not_reproduced"
    return "reproduced" if l_ > 0 else "inconclusive"


def describe_replication(verdict: str, lo: Any, hi: Any, n: int, why_not: list[str],
                         claim: Any = SEED_REPORT["diff"]) -> str:
    c = fmt_points(claim, signed=True)
    if why_not:
        return ("The comparison with the seed report does not apply: " + "; ".join(why_not)
                + ". The seed's numbers are shown for reference only.")
    ci = f"[{fmt_points(lo)}, {fmt_points(hi)}]"
    over = f"95% CI across {n} seeds {ci}"
    return {
        "reproduced": f"Reproduced: the seed's {c} points lie inside this study's {over}, which "
                      "excludes 0.",
        "inconclusive": f"Not decided: this study's {over} contains both the seed's {c} points "
                        "and 0; more seeds would narrow it.",
        "exceeded": f"Exceeded: this study's whole {over} lies above the seed's {c} points.",
        "smaller": f"Not reproduced in size: the change helps (this study's {over} lies above "
                   f"0) but by less than the seed's {c} points (the whole interval lies below "
                   "it).",
        "not_reproduced": f"Not reproduced: this study's {over} lies below the seed's {c} points "
                          "and does not exclude a loss, so no gain is shown.",
    }.get(verdict, "Not judged: the study has no seed-level interval (one trained pair per "
                   "arm measures test-image sampling only, not training noise); rerun with "
                   "--seeds 3 to set it against the seed's claim.")


# --- the recipe: what the seed report states and what cifarlens adds ---------------------------

# (setting, what the seed report says, why cifarlens does what it does)
RECIPE: list[tuple[str, str, str]] = [
    ("Model", "4 conv blocks (64→128→256→512), BN, ReLU, max-pool; FC head with dropout 0.2; "
     "10,462,756 parameters",
     "the seed gives no convs per block or FC sizes; these reproduce its parameter count and "
     "FLOPs exactly (Table 2)"),
    ("Optimizer", "SGD with momentum (no value)",
     "0.9 is the usual CIFAR value; Nesterov is not mentioned, so plain momentum"),
    ("Peak learning rate", "not stated",
     "a common peak for SGD at batch 128 on CIFAR VGGs; not tuned here"),
    ("Warm-up", "not stated", "keeps the first steps of a BN network at the peak rate stable"),
    ("Schedule", "cosine annealing", "as stated; stepped per batch, down to 0"),
    ("Weight decay", "not stated",
     "5e-4 is the usual CIFAR value; BN and bias excluded, as is common practice"),
    ("Loss", "cross-entropy with label smoothing (no value)",
     "0.1 is the common value"),
    ("Batch size", "128", "as stated; dropping the last partial batch keeps shapes fixed "
     "(cuDNN autotuning, torch.compile)"),
    ("Epochs", "50", "as stated"),
    ("Split", "80% train / 20% validation",
     "as stated; stratified by class, drawn with the run's random seed"),
    ("Baseline augmentation", "none named", "the seed's baseline"),
    ("The change", "random cropping and horizontal flipping",
     "the seed gives no padding; 4 pixels is the standard CIFAR crop"),
    ("Precision", "not stated (\"a GPU-enabled environment\")",
     "bf16 autocast where the hardware has it (auto), for speed; bf16 and fp32 give different "
     "numbers, so a study never mixes them"),
    ("Seeds", "one run per model, seed not stated",
     "one run per arm measures only test-image sampling, not training noise"),
]


CROP_FLIP = "4-pixel zero padding, random 32×32 crop, horizontal flip with p = 0.5"


def recipe_rows(cfg: dict[str, Any], precision: Any = None, seeds: Any = None,
                change: dict[str, Any] | None = None) -> list[list[str]]:
    """RECIPE with a middle column 'cifarlens uses', read from a config (a study's, or the
    `paper` preset's), so the table shows what ran, never a copy."""
    def g(k: str) -> Any:
        return cfg.get(k)

    def f(k: str, fmt: str = "{:g}") -> str:
        v = num(g(k))
        return fmt.format(v) if v is not None else NA

    ch = _d(change)
    vf = num(g("val_fraction"))
    split = (f"{(1 - vf) * 100:g}% / {vf * 100:g}%, stratified by class" if vf is not None
             else NA)
    n = len(seeds) if isinstance(seeds, list) else num(seeds)
    used = {
        "Model": (f"{_s(g('model'))}: 2, 3, 3, 3 convs per block, FC 1024 → 512 → classes"
                  if canonical_model_name(g("model")) == "vgg" else _s(g("model"))),
        "Optimizer": f"SGD, momentum {f('momentum')}, no Nesterov",
        "Peak learning rate": f("lr"),
        "Warm-up": f"{f('warmup_epochs')} epoch(s), linear from 0",
        "Schedule": "cosine to 0, per step, after the warm-up",
        "Weight decay": f"{f('weight_decay')} on conv and linear weights, not on BN or bias",
        "Loss": f"cross-entropy, label smoothing {f('label_smoothing')}",
        "Batch size": f"{f('batch_size')}, last partial batch dropped",
        "Epochs": f("epochs"),
        "Split": split,
        "Baseline augmentation": _s(g("augment")),
        "The change": (f"{_s(ch.get('key'))}: {_s(ch.get('baseline'), UNSET)} → "
                       f"{_s(ch.get('variant'), UNSET)}" if ch else "augment: none → crop-flip")
        + (f" ({CROP_FLIP})" if not ch or ch.get("variant") == "crop-flip" else ""),
        "Precision": _s(precision),
        "Seeds": (f"{int(n)} per arm, paired by seed" if n is not None else NA),
    }
    return [[name, says, used[name], why] for name, says, why in RECIPE]


def describe_cost(base: dict[str, Any], var: dict[str, Any], ckey: str,
                   verdict: str = "") -> str:
    """Parameters and FLOPs of the variant against the baseline. "The gain is free at inference
    time" only when `verdict` is the seed-level test's "rose" (the change helped)."""
    pa, pb, fa, fb = (num(x) for x in (base.get("params"), var.get("params"),
                                       base.get("flops"), var.get("flops")))
    if pa is None or pb is None:
        return "Parameter counts were not recorded for both models."
    if pa == pb and (fa is None or fb is None or fa == fb):
        return (f"The change ({ckey}) adds no parameters or FLOPs"
                + (": its gain is free at inference time." if verdict == "rose" else "."))
    dp = pb - pa
    if dp == 0:
        out = "The variant has the same number of parameters"
    else:
        out = f"The variant has {fmt_int(abs(dp))} {'more' if dp > 0 else 'fewer'} parameters"
        if pa:  # a relative change needs a nonzero base
            out += f" ({dp / pa * 100:+.2f}%)"
    if fa and fb is not None and fa != fb:
        out += f" and {(fb - fa) / fa * 100:+.2f}% FLOPs"
    return out + " than the baseline."
