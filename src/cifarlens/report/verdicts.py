"""Sentences for the verdicts of issue 22, each from the decision record it states.

Every builder reads the records the study stores in summary.json (power.decide's record,
calibration_stats.ece_seed_change, superclass_stats.superclass_cluster_test, the sequential
rule's looks, prob_improvement, noise.variance_sources; study/schema_verdicts.py types them), as
plain dicts. A verdict word (helped, hurt, equivalent, better calibrated, reproduced, ...)
appears only where its record's test concluded it; every verdict says what noise its interval
covers and what the study could have detected.
"""

from __future__ import annotations

from typing import Any

from .._defaults import canonical_model_name
from .constants import NA, UNSET
from .formats import (
    _d,
    _l,
    _s,
    clean_text,
    fmt_int,
    fmt_pct,
    fmt_points,
    num,
    p_clause,
)
from .sentences import SEED_REPORT

PLANNED_SEEDS_TEXT = "1,000"  # = analysis.power.MAX_SEEDS_PLANNED (tests check they agree)
COVERS_SEEDS = "training seeds and the test-image noise in each seed's accuracy"


# --------------------------------------------------------------------------- small formats


def _about(x: Any) -> str:
    """A fraction as points with two significant digits: 0.0899 -> '9.0', 0.0082 -> '0.82'."""
    f = num(x)
    if f is None:
        return NA
    v = abs(f) * 100
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def margin_text(margin: Any) -> str:
    """'±1 point', '±0.5 points' (margins are fractions like every other difference)."""
    m = num(margin)
    if m is None:
        return NA
    v = f"{m * 100:g}"
    return f"±{v} point" + ("" if v == "1" else "s")


def points_text(x: Any) -> str:
    """'1 point', '0.5 points' (a fraction in points, as --detect and --margin are given)."""
    return _points_word(x)


def _points_word(x: Any) -> str:
    v = f"{(num(x) or 0) * 100:g}"
    return f"{v} point" + ("" if v == "1" else "s")


def _ci(lo: Any, hi: Any, level: Any) -> str:
    lvl = num(level) or 0.95
    return f"{lvl * 100:g}% CI [{fmt_points(lo)}, {fmt_points(hi)}]"


def _seeds(n: Any) -> str:
    k = int(num(n) or 0)
    return f"{k} seed" + ("" if k == 1 else "s")


def _t_test(dec: dict[str, Any], family: int | None) -> str:
    n = int(num(dec.get("n")) or 0)
    df = n - 1
    out = (f"paired t-test, {df} degree{'' if df == 1 else 's'} of freedom, "
           f"{p_clause(dec.get('p_value'))}")
    pa, p = num(dec.get("p_adjusted")), num(dec.get("p_value"))
    if pa is not None and p is not None and (pa != p or family):  # an ablation: always
        over = f" over {int(family)} changes" if family else ""
        out += f"; Holm-adjusted{over} {p_clause(pa)}"
    return out


# --------------------------------------------------------------------------- power and verdicts


def describe_power(dec: dict[str, Any]) -> str:
    """'with 3 seeds this study could detect changes of about 9.0 points (80% power, two-sided
    5% test); about 62 seeds would detect 1 point' (power.decide's mde and seeds_for_detect)."""
    n = int(num(dec.get("n")) or 0)
    mde = num(dec.get("mde"))
    if n < 2:
        return ("with one seed per arm this study could not detect any change: a test needs at "
                "least 2 seeds per arm, better 3 to 5")
    if mde is None:
        return ("every seed gave the same difference, so the seeds' spread, and with it what "
                "this study could detect, is unknown")
    alpha, power = num(dec.get("alpha")) or 0.05, num(dec.get("power")) or 0.8
    det = _points_word(dec.get("detect"))
    k = num(dec.get("seeds_for_detect"))
    first = (f"with {n} seeds this study could detect changes of about {_about(mde)} points "
             f"({power:.0%} power, two-sided {alpha * 100:g}% test)")
    if k is None:
        return f"{first}; more than {PLANNED_SEEDS_TEXT} seeds would be needed to detect {det}"
    if k <= n:
        return f"{first}; these {n} seeds suffice to detect {det}"
    return f"{first}; about {int(k)} seeds would detect {det}"


VERDICT_WORDS = {"helped": "The change helped", "hurt": "The change hurt",
                 "equivalent": "The change made no difference beyond the margin",
                 "not decided": "Not decided",
                 "no detectable difference": "No detectable difference",
                 "not tested": "The change's effect was not tested"}


def verdict_lead(dec: dict[str, Any] | None) -> str:
    """The bold lead of the headline, from the decision itself."""
    d = _d(dec)
    word = d.get("decision")
    if word == "equivalent":
        return f"The change made no difference beyond {margin_text(d.get('margin'))}"
    if word == "not decided":
        return f"Not decided with {_seeds(d.get('n'))}"
    return VERDICT_WORDS.get(str(word), VERDICT_WORDS["not tested"])


def ablation_word(dec: dict[str, Any] | None) -> str:
    """The ablation table's verdict cell: the same decision the headline states."""
    d = _d(dec)
    word = str(d.get("decision", "not tested"))
    return f"equivalent within {margin_text(d.get('margin'))}" if word == "equivalent" else word


def describe_decision(dec: dict[str, Any], *, metric: str = "the mean test accuracy",
                      before: Any = None, after: Any = None, family: int | None = None) -> str:
    """The verdict about the change as one clause, from power.decide's record: the change,
    its interval over training seeds, its test (Holm-adjusted when it was), the decision in
    words, and what the study could have detected, e.g.
    'across 3 seeds, the mean test accuracy changed by -5.33 points (95% CI [-12.17, 1.51];
    paired t-test, 2 degrees of freedom, p = 0.079): not decided, as the interval holds 0 and
    reaches beyond ±1 point; with 3 seeds this study could detect changes of about 9.0 points
    ...'."""
    d = _d(dec)
    word, n = d.get("decision"), _seeds(d.get("n"))
    mean = num(d.get("mean_diff"))
    fromto = (f" from {fmt_pct(before)} to {fmt_pct(after)}"
              if num(before) is not None and num(after) is not None else "")
    power = describe_power(d)
    if word == "not tested" or mean is None:
        why = _s(d.get("reason"), "no seed-level test was run")
        return (f"across {n}, {metric} changed by {fmt_points(mean, signed=True)} points"
                f"{fromto}, but nothing about the change is tested ({why}); {power}")
    ci = _ci(d.get("lo"), d.get("hi"), d.get("level"))
    test = _t_test(d, family)
    if d.get("rule") == "sequential":  # --seeds auto: the rule's repeated interval decides
        ci, test = f"repeated {ci}", f"{_s(d.get('reason'))}; {test} shown for reference"
    m = margin_text(d.get("margin"))
    eq = _d(d.get("equivalence"))
    cover = f"the interval covers {COVERS_SEEDS}"
    if word in ("helped", "hurt"):
        verb = "rose" if word == "helped" else "fell"
        small = (f", though by less than the {m} margin (two one-sided tests, "
                 f"{p_clause(eq.get('p_value'))})" if eq.get("equivalent") else "")
        return (f"across {n}, {metric} {verb} by {fmt_points(abs(mean))} points{fromto} "
                f"({ci}; {test}; {cover}): the change {word}{small}; {power}")
    changed = f"across {n}, {metric} changed by {fmt_points(mean, signed=True)} points{fromto}"
    if word == "equivalent":
        eq_ci = _ci(eq.get("lo"), eq.get("hi"), eq.get("level"))
        return (f"{changed} ({ci}; {cover}); two one-sided tests place it within {m} "
                f"({eq_ci}, {p_clause(eq.get('p_value'))}): the change is equivalent within "
                f"{m}; {power}")
    alpha = f"{(num(d.get('alpha')) or 0.05) * 100:g}%"
    adjusted = "adjust" in _s(d.get("reason"), "")
    holds = (f"the interval excludes 0, but the Holm-adjusted p is not below {alpha}"
             if adjusted else "the interval holds 0")
    if word == "not decided":
        return (f"{changed} ({ci}; {test}; {cover}): not decided, as {holds}"
                f"{',' if adjusted else ''} and it reaches beyond {m}; {power}")
    return (f"{changed} ({ci}; {test}; {cover}): no detectable difference ({holds}; no "
            f"equivalence margin was set, so this does not show that the change is harmless); "
            f"{power}")


def describe_seeds(seeds: dict[str, Any] | None, decision: dict[str, Any] | None = None,
                   seed_list: list[Any] | None = None) -> str:
    """Both arms' mean and SD over the seeds, then the decision about the change (the same
    record, and words, as the headline: verdicts.describe_decision)."""
    if not seeds:
        which = ", ".join(_s(s) for s in seed_list or []) or NA
        return (f"Multi-seed results were not computed: each model was trained once (seed "
                f"{which}), so the comparison does not include seed-to-seed variation.")
    n = seeds.get("n", seeds.get("n_seeds"))

    def ms(m: Any, s: Any) -> str:
        return fmt_pct(m) + (f" ± {fmt_points(s)}" if num(s) is not None else "")

    lead = (f"Over {fmt_int(n)} seeds, the baseline reached "
            f"{ms(seeds.get('mean_a'), seeds.get('std_a'))} and the variant "
            f"{ms(seeds.get('mean_b'), seeds.get('std_b'))} test accuracy "
            "(mean ± sample std in points)")
    clause = describe_decision(decision) if decision else "no decision was recorded"
    note = f" Note: {clean_text(seeds['note'])}." if seeds.get("note") else ""
    return f"{lead}; {clause}.{note}"


def headline_decision(seeds_block: dict[str, Any] | None, ablation: dict[str, Any] | None,
                      slug: str | None = None) -> dict[str, Any] | None:
    """The decision the headline states: with several changes, the first change's row of the
    ablation table (Holm-adjusted), so the first screen and the table never disagree; else the
    seed block's own decision. None when the study has no seed-level decision."""
    rows = [_d(r) for r in _l(_d(ablation).get("rows"))]
    if rows:
        row = next((r for r in rows if slug is not None and r.get("slug") == slug), rows[0])
        return _d(row.get("decision")) or None
    return _d(_d(seeds_block).get("decision")) or None


def describe_prob_improvement(pi: dict[str, Any] | None) -> str:
    """P(variant > baseline) over the seeds, with its bootstrap interval; numbers only."""
    d = _d(pi)
    p = num(d.get("p"))
    if p is None:
        return "P(variant > baseline) was not computed."
    n = _seeds(d.get("n"))
    how = ("share of the seeds whose variant beat the baseline of the same seed" if
           d.get("paired", True) else "over all pairs of variant and baseline runs")
    lo, hi = num(d.get("lo")), num(d.get("hi"))
    ci = (f", {(num(d.get('level')) or 0.95) * 100:g}% bootstrap interval over seeds "
          f"{lo:.2f} to {hi:.2f}" if lo is not None and hi is not None else ", no interval")
    return (f"P(variant > baseline) = {p:.2f} ({how}, ties counting one half, {n}{ci}); with "
            "few seeds it can take only a few values, so it is shown beside the t interval, "
            "not as a verdict.")


def describe_noise(noise: dict[str, Any] | None) -> str:
    """Seed-level SD next to the SD a single pair's difference has from test-image sampling
    (noise.variance_sources, or image_sampling_sd from summary.json's McNemar counts)."""
    d = _d(noise)
    seed, image = num(d.get("seed_sd")), num(d.get("image_sampling_sd"))
    if seed is None or image is None:
        return "The spread of the per-seed differences was not split by source."
    out = (f"Across {_seeds(d.get('n_seeds'))} the per-seed differences vary with an SD of "
           f"{fmt_points(seed)} points; redrawing the test images would move one pair's "
           f"difference by about {fmt_points(image)} points (SD, from its McNemar counts).")
    shared = num(d.get("test_set_var"))
    both = num(d.get("se_both"))
    if shared is not None and both is not None:
        out += (f" The seed-level interval does not include the part every seed shares "
                f"because all are scored on the same test images (SD {fmt_points(shared ** 0.5)} "
                f"points); with it, the mean difference has a standard error of "
                f"{fmt_points(both)} points as a statement about new images.")
    return out


def describe_sequential(look: dict[str, Any] | None, max_seeds: Any = None) -> str:
    """What `--seeds auto` did: where it stopped, why, and the boundary that kept alpha."""
    d = _d(look)
    word, n = d.get("decision"), d.get("n")
    looks = list(d["looks"]) if isinstance(d.get("looks"), (list, tuple)) else []
    if not word:
        return "The seeds were not chosen by the sequential rule."
    top = max_seeds if max_seeds is not None else (looks[-1] if looks else NA)
    plan = (f"looks after {', '.join(_s(x) for x in looks)} seeds, O'Brien-Fleming alpha "
            f"spending" if d.get("spending", "obf") == "obf" else
            f"looks after {', '.join(_s(x) for x in looks)} seeds, Pocock alpha spending")
    alpha = (num(d.get("alpha")) or 0.05) * 100
    keep = f"which keeps the chance of a false 'helped' or 'hurt' at {alpha:g}% over all looks"
    lo, hi = d.get("lo"), d.get("hi")
    rci = (f"repeated {100 - alpha:g}% interval [{fmt_points(lo)}, {fmt_points(hi)}] points"
           if num(lo) is not None else "no interval yet")
    b = num(d.get("boundary"))
    at = f"|t| of at least {b:.2f} at this look" if b is not None else "no boundary"
    if word == "continue":
        return (f"After {_seeds(n)} the sequential rule continues ({rci}; it needs {at}; {plan}, "
                f"{keep}).")
    return (f"The sequential rule stopped after {_seeds(n)} of at most {_s(top)}: {word} "
            f"({rci}; a difference needs {at}; {plan}, {keep}).")


# --------------------------------------------------------------------------- calibration


def describe_calibration_verdict(seed_change: dict[str, Any] | None, ece_a: Any = None,
                                 ece_b: Any = None, pair_seed: Any = None) -> str:
    """A calibration change is concluded only from the seed-level paired test of ECE
    (calibration_stats.ece_seed_change); one pair's ECEs are stated as numbers."""
    sc = _d(seed_change)
    verdict = sc.get("verdict")
    if not sc or verdict == "not tested":
        which = f" (the seed-{_s(pair_seed)} pair)" if pair_seed is not None else ""
        return (f"Test ECE before temperature scaling{which}: {fmt_pct(ece_a)} for the baseline, "
                f"{fmt_pct(ece_b)} for the variant. One pair of models is not a test of "
                "calibration, so nothing is concluded about it.")
    mean = num(sc.get("mean_diff"))
    n = _seeds(sc.get("n"))
    ci = _ci(sc.get("lo"), sc.get("hi"), sc.get("level"))
    per = ", ".join(fmt_points(x, signed=True) for x in _l(sc.get("per_seed")))
    per_txt = f"; per seed {per}" if per else ""
    cover = f"the interval covers {COVERS_SEEDS.replace('accuracy', 'ECE')}"
    if verdict in ("better calibrated", "worse calibrated"):
        lower = verdict == "better calibrated"
        return (f"Across {n} the variant's test ECE is {fmt_points(abs(mean or 0))} points "
                f"{'lower' if lower else 'higher'} than the baseline's on average ({ci}; "
                f"{_t_test(sc, None)}; {cover}): it is {verdict} before temperature scaling.")
    if verdict == "equally calibrated":
        eq = _d(sc.get("equivalence"))
        return (f"Across {n} the variant's test ECE differs from the baseline's by "
                f"{fmt_points(mean, signed=True)} points on average ({ci}); two one-sided tests "
                f"place the difference within {margin_text(sc.get('margin'))} "
                f"({p_clause(eq.get('p_value'))}): the two are equally calibrated.")
    return (f"Across {n} the variant's test ECE changed by {fmt_points(mean, signed=True)} "
            f"points on average ({ci}{per_txt}; {cover}): {verdict}, so nothing is concluded "
            f"about calibration; {describe_power(sc)} of ECE.")


def describe_ece_intervals(name: str, iv: dict[str, Any] | None, seed: Any = None) -> str:
    """One model's ECE before and after temperature scaling with bootstrap intervals over the
    test images (calibration_stats.ece_scaling_intervals): numbers with their noise; `seed`
    names the model's seed."""
    d = _d(iv)
    b, a, c = _d(d.get("before")), _d(d.get("after")), _d(d.get("change"))
    if num(b.get("ece")) is None:
        return f"The {name}'s ECE interval was not computed."
    lvl = f"{(num(d.get('level')) or 0.95) * 100:g}%"

    def one(x: dict[str, Any]) -> str:
        return (f"{fmt_pct(x.get('ece'))} ({lvl} interval {fmt_pct(x.get('lo'))} to "
                f"{fmt_pct(x.get('hi'))})")

    which = f" (seed {_s(seed)})" if seed is not None else ""
    out = (f"The {name}'s test ECE{which} is {one(b)} before temperature scaling and {one(a)} after "
           f"(bootstrap over the {fmt_int(d.get('n'))} test images")
    if num(c.get("diff")) is not None:
        out += (f"); scaling changed it by {fmt_points(c.get('diff'), signed=True)} points "
                f"({lvl} interval [{fmt_points(c.get('lo'))}, {fmt_points(c.get('hi'))}], "
                "the same resamples; the temperature, fitted on validation images, held fixed)")
    else:
        out += ")"
    return out + ". These intervals cover test-image sampling for this one model, not seeds."


# --------------------------------------------------------------------------- superclasses


def describe_superclass_clustered(name: str, cl: dict[str, Any] | None,
                                  coarse_accuracy: Any = None) -> str:
    """The within-superclass error share against chance, concluded only from the cluster
    bootstrap by true class (superclass_stats.superclass_cluster_test)."""
    d = _d(cl)
    share, chance = num(d.get("share")), num(d.get("chance_share"))
    lead = (f"The {name} puts the right superclass on {fmt_pct(coarse_accuracy)} of test images. "
            if num(coarse_accuracy) is not None else f"For the {name}, ")
    if share is None or chance is None:
        return lead + "No errors to compare with chance."
    ci = _l(d.get("share_ci"))
    ci_txt = (f", 95% interval {fmt_pct(ci[0])} to {fmt_pct(ci[1])}" if len(ci) == 2 else "")
    facts = (f"{lead}{fmt_pct(share)} of its errors ({fmt_int(d.get('errors_within_superclass'))}"
             f" of {fmt_int(d.get('errors'))}) stay inside the true superclass{ci_txt}, against "
             f"{fmt_pct(chance)} for a uniformly random wrong class (cluster bootstrap over "
             f"{fmt_int(d.get('clusters'))} true classes: errors of one class are resampled "
             "together)")
    word = d.get("decision")
    if word == "above chance":
        return f"{facts}: errors favour related classes, {share / chance:.1f}× as often as chance."
    if word == "below chance":
        return f"{facts}: errors fall inside the true superclass less often than chance."
    if word == "not distinguishable":
        return f"{facts}: not distinguishable from chance, so no preference is shown."
    return f"{facts}; no interval (errors in under 2 classes), so these are numbers only."


# --------------------------------------------------------------------------- the seed report


# (config key, words, the seed's value): settings the seed report states, which a study must
# share for its numbers to be set against the seed's +6.63. Optimizer and schedule are not
# settings in cifarlens (always SGD, cosine): a config without them has those values.
SEED_STATES: list[tuple[str, str, Any]] = [
    ("model", "the model", "vgg"), ("epochs", "the number of epochs", 50),
    ("batch_size", "the batch size", 128),
    ("val_fraction", "the validation fraction", 0.2), ("optimizer", "the optimizer", "sgd"),
    ("schedule", "the schedule", "cosine"),
]
# Settings the seed names without a value: they must be on (nonzero).
SEED_USES = [("momentum", "trains SGD with momentum"),
             ("label_smoothing", "trains with label smoothing")]
# Settings the seed leaves open, compared with the reference recipe (the paper preset).
SEED_OPEN = [("lr", "the learning rate"), ("weight_decay", "the weight decay"),
             ("warmup_epochs", "the warm-up"), ("momentum", "the momentum"),
             ("label_smoothing", "the label smoothing")]
DEFAULTS_WHEN_ABSENT = {"optimizer": "sgd", "schedule": "cosine"}
# The paper preset's values of the settings the seed leaves open: the recipe cifarlens reproduces
# the seed with (= training.config.make_config("paper"); a test checks they agree, so the report
# need not import the training code and torch).
REFERENCE = {"lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1.0, "momentum": 0.9,
             "label_smoothing": 0.1}
PRECISIONS = ("bf16", "fp32")


def _data_reasons(sm: dict[str, Any]) -> list[str]:
    why = []
    src, ds = sm.get("data_source"), sm.get("dataset")
    if src == "generated":
        why.append("the study ran on generated data, not CIFAR-100")
    elif src == "user":
        why.append(f"the study ran on your data: {_s(sm.get('data_name'), 'unnamed')}, not "
                   "CIFAR-100")
    elif src is None:
        why.append("the study does not record its data source")
    if ds != SEED_REPORT["dataset"] and src != "user":
        why.append(f"the dataset is {_s(ds)}, not CIFAR-100")
    ch = _d(sm.get("change"))
    key, b, v = SEED_REPORT["change"]
    if (ch.get("key"), ch.get("baseline"), ch.get("variant")) != (key, b, v):
        why.append(f"the change is {_s(ch.get('key'))}: {_s(ch.get('baseline'), UNSET)} → "
                   f"{_s(ch.get('variant'), UNSET)}, not the seed's augment: none → crop-flip")
    return why


def replication_settings(sm: dict[str, Any], reference: dict[str, Any] | None = None
                         ) -> list[str]:
    """Why this study cannot be set against the seed report ([] = it can), naming each setting
    that differs: the data and the change; every setting the seed states (model, epochs, batch
    size, 80/20 split, full training set, SGD with momentum, cosine schedule, label smoothing);
    with ``reference`` (the paper preset's config) the settings the seed leaves open (learning
    rate, weight decay, warm-up, momentum and smoothing values); and the precision, which must
    be recorded (and equal ``reference["precision"]`` when that names bf16 or fp32)."""
    why = _data_reasons(sm)
    cfg = _d(sm.get("config"))
    if not cfg:
        return why + ["the study does not record its training settings"]
    for key, words, want in SEED_STATES:
        got = cfg[key] if key in cfg else DEFAULTS_WHEN_ABSENT.get(key)
        if key == "model" and got is not None:
            got = canonical_model_name(got)
        if got is None:
            why.append(f"the study does not record {words}")
        elif got != want:
            seed = "the seed's baseline CNN" if key == "model" else f"the seed's {_s(want)}"
            why.append(f"{words} is {_s(cfg.get(key, got))}, not {seed}")
    if "train_limit" not in cfg:
        why.append("the study does not record whether it used the full training split")
    elif cfg.get("train_limit") is not None:
        why.append(f"it trained on a {_s(cfg.get('train_limit'))}-image subset, not the full "
                   "training split")
    for key, uses in SEED_USES:
        v = num(cfg.get(key))
        name = key.replace("_", " ")
        if v is None:
            why.append(f"the study does not record its {name}")
        elif v <= 0:
            why.append(f"the {name} is {_s(cfg.get(key))}, but the seed {uses}")
    ref = _d(reference)
    for key, words in SEED_OPEN:
        if key in ref and key in cfg and num(cfg[key]) != num(ref[key]):
            why.append(f"{words} is {_s(cfg[key])}, not {_s(ref[key])}, the value cifarlens "
                       "reproduces the seed with (the seed states none)")
    precision = _d(sm.get("environment")).get("precision")
    if precision is None:
        why.append("the study does not record its precision")
    elif ref.get("precision") in PRECISIONS and precision != ref["precision"]:
        why.append(f"it trained in {_s(precision)}, not the reference's {ref['precision']}")
    return why


def _pts(x: float) -> float:
    return round(x * 100, 2)  # decisions on the numbers as shown (2 decimals, in points)


REPLICATION = ("reproduced", "consistent", "not_decided", "exceeded", "smaller", "no_gain",
               "loss", "not_judged")


def replication_judgement(lo: Any, hi: Any, margin: Any = 0.01,
                          claim: Any = SEED_REPORT["diff"]) -> str:
    """Where the seed's claimed gain sits against this study's seed-level 95% interval:
    'reproduced' (the whole interval lies within claim ± margin: the same gain), 'consistent'
    (it holds the claim and excludes 0, but is wider than the margin), 'not_decided' (it holds
    the claim and 0), 'exceeded' (wholly above the claim), 'smaller' (above 0, below the
    claim), 'no_gain' (below the claim, holding 0), 'loss' (wholly below 0), 'not_judged' (no
    interval). Judged on the numbers as shown (points, 2 decimals)."""
    lf, hf, c, m = num(lo), num(hi), num(claim), num(margin)
    if lf is None or hf is None or c is None:
        return "not_judged"
    low, high, cc = _pts(lf), _pts(hf), _pts(c)
    if m is not None and cc - _pts(m) < low and high < cc + _pts(m):
        return "reproduced"
    if low > cc:
        return "exceeded"
    if low <= cc <= high:
        return "consistent" if low > 0 else "not_decided"
    if low > 0:
        return "smaller"
    return "loss" if high < 0 else "no_gain"


def describe_replication_judgement(verdict: str, lo: Any, hi: Any, n: Any, why_not: list[str],
                                   margin: Any = 0.01, claim: Any = SEED_REPORT["diff"]) -> str:
    c = fmt_points(claim, signed=True)
    if why_not:
        return ("The comparison with the seed report does not apply: " + "; ".join(why_not)
                + ". The seed's numbers are shown for reference only.")
    over = f"95% CI across {_seeds(n)} [{fmt_points(lo)}, {fmt_points(hi)}]"
    m = margin_text(margin)
    return {
        "reproduced": f"Reproduced: this study's {over} lies within {m} of the seed's {c} "
                      "points, so it finds the same gain.",
        "consistent": f"Consistent with the seed's {c} points: this study's {over} holds them "
                      f"and excludes 0 (a gain is shown), but it is wider than {m} around "
                      "them, so the size of the gain is not pinned down.",
        "not_decided": f"Not decided: this study's {over} holds both the seed's {c} points and "
                       "0; more seeds would narrow it.",
        "exceeded": f"Exceeded: this study's whole {over} lies above the seed's {c} points.",
        "smaller": f"Smaller: the change helps (this study's {over} lies above 0) but by less "
                   f"than the seed's {c} points (the whole interval lies below them).",
        "no_gain": f"Not reproduced: this study's {over} lies below the seed's {c} points and "
                   "holds 0, so no gain is shown.",
        "loss": f"Not reproduced: this study's {over} lies wholly below 0: it shows a loss "
                f"where the seed reports a gain of {c} points.",
    }.get(verdict, "Not judged: the study has no seed-level interval (one trained pair per "
                   "arm measures test-image sampling only, not training noise); rerun with "
                   "--seeds 3 to set it against the seed's claim.")


# --------------------------------------------------------------------------- attribution


def describe_attribution(key: Any, baseline: Any, variant: Any, converged: bool | None,
                         epochs: Any = None, checked: bool = False) -> str:
    """'Any difference is attributable to it', qualified when the runs had not converged (a
    change that learns more slowly looks worse early), when they could not be judged
    (`checked` but `converged` None: under 2 epochs) or when nobody checked."""
    lead = (f"The one change: {_s(key)} goes from {_s(baseline, UNSET)} (baseline) to "
            f"{_s(variant, UNSET)} (variant); no other setting, seed or data split differs, so "
            "any difference is attributable to it")
    e = num(epochs)
    after = f" after {fmt_int(e)} epoch{'' if e == 1 else 's'}" if e is not None else ""
    if converged is True:
        return lead + " (up to training noise)."
    if converged is False:
        return (lead + f" at this training length only: the runs had not converged{after}, and "
                "a change that makes training learn more slowly can look worse before "
                "convergence than after it.")
    why = ("could not be judged (the rule needs validation curves of 2 or more epochs)"
           if checked else "was not checked")
    return (lead + f"{after} of training (up to training noise); whether the runs had converged "
            f"{why}, so it may not hold for longer training.")
