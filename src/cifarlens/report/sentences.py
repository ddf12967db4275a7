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
    fmt_auc,
    fmt_float,
    fmt_int,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)

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


FAITH_REFERENCES = ("random", "smooth_random", "centre_prior", "same_class_other")


def describe_faithfulness(faith: dict[str, Any], tests: dict[str, Any] | None = None,
                          who: str | None = None) -> str:
    """Grad-CAM's deletion/insertion AUCs against i.i.d. noise, a smooth random map at the
    layer's resolution, a centre prior and (when computed, key "same_class_other") another
    image's map of the same class, concluding only what the paired bootstrap CIs over the
    images support (lower deletion and higher insertion are better). The rule: image-specific
    evidence only when Grad-CAM beats every reference on both measures; when a reference beats
    Grad-CAM on both, the sentence says so and reads the maps as no explanation. ``who`` names
    the model and seed the maps come from ("baseline, seed 0")."""
    g = _d(faith.get("gradcam"))
    gd, gi = num(g.get("deletion_auc")), num(g.get("insertion_auc"))
    t = _d(tests)
    comps = _d(t.get("comparisons"))
    if gd is None or gi is None:
        return "The deletion/insertion faithfulness check was not computed."
    lead = (f"{f'For the {clean_text(who)}, d' if who else 'D'}eleting pixels in Grad-CAM "
            f"order gives a deletion AUC of {fmt_auc(gd)} (lower is better) and inserting them "
            f"an insertion AUC of {fmt_auc(gi)} (higher is better)")
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
    for key in FAITH_REFERENCES:
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
    strong = [k for k in FAITH_REFERENCES[1:] if k in verdicts]
    beats = {k: all(v == "better" for v in verdicts[k].values()) for k in verdicts}
    beaten = [_s(_d(comps.get(k)).get("name")) for k in verdicts
              if all(v == "worse" for v in verdicts[k].values())]
    if not strong and beats.get("random"):
        verdict = ("Grad-CAM beats i.i.d. random pixels, but no smooth or centred baseline was "
                   "computed, so this check does not show that the maps point at "
                   "image-specific evidence")
    elif strong and all(beats[k] for k in strong) and beats.get("random", True):
        verdict = ("Grad-CAM beats every baseline on both measures, including the "
                   "input-independent centre prior, so these maps carry image-specific "
                   "evidence the model uses")
    elif beaten:
        verdict = (f"the {' and the '.join(beaten)} beat{'s' if len(beaten) == 1 else ''} "
                   "Grad-CAM on both measures, so by this check the maps point at the evidence "
                   "the model uses less well than a map that is not this image's own: they "
                   "should not be read as explanations of these predictions")
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


def describe_border(bs: dict[str, Any], alpha: float = ALPHA, who: str | None = None) -> str:
    """Grad-CAM mass near the image border, failures vs correct predictions, against a uniform
    map and a centre prior. A difference is stated only when the permutation test rejects; it
    is never called background reliance when the layer's cells are wider than the band.
    ``who`` names the model and seed the maps come from ("baseline, seed 0")."""
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
    lead = (f"{f'For the {clean_text(who)}, on' if who else 'On'} failures, {fmt_pct(f)} of "
            f"the Grad-CAM mass lies in {band}, against "
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


NOISE_PAIR = "test-image sampling only, for one pair of trained models"
NOISE_SEEDS = ("training seeds (split, initialization, data order, augmentation and dropout "
               "draws) and test-image sampling as it shows in each seed's accuracy")


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
    time" only when `verdict` is the seed-level decision "helped"."""
    pa, pb, fa, fb = (num(x) for x in (base.get("params"), var.get("params"),
                                       base.get("flops"), var.get("flops")))
    if pa is None or pb is None:
        return "Parameter counts were not recorded for both models."
    if pa == pb and (fa is None or fb is None or fa == fb):
        return (f"The change ({ckey}) adds no parameters or FLOPs"
                + (": its gain is free at inference time." if verdict == "helped" else "."))
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
