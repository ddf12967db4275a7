"""Power, equivalence and the one verdict rule for a seed-paired comparison.

A study trains the baseline and the variant with the same seeds, so d_s = acc_variant(s) -
acc_baseline(s) is one paired difference per seed, and the verdict is a statement about the
mean of d. Everything here is in the units of d (accuracy fractions: 0.01 is one point) and
takes the differences, or their count, mean and SD as summary.json's seed block stores them.

The t machinery assumes the d_s are independent draws from one normal distribution: seeds are
independent trainings, and normality is the paired t-test's own assumption. The power numbers
plug the observed SD in as if it were the true one (the usual planning convention); with 3
seeds that SD is itself uncertain by a factor of about 2 either way, which the docs say.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as sps

from ..errors import CifarlensError

MAX_SEEDS_PLANNED = 1000  # seeds_needed gives up (None) beyond this many seeds

DECISIONS = ("helped", "hurt", "equivalent", "not decided", "no detectable difference",
             "not tested")


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0 < a < 0.5:
        raise CifarlensError(f"alpha must be between 0 and 0.5, got {alpha}")
    return a


def _check_power(power: float, alpha: float) -> float:
    p = float(power)
    if not alpha < p < 1:
        raise CifarlensError(f"power must lie between alpha ({alpha:g}) and 1, got {power}")
    return p


def _positive(x: Any) -> float | None:
    """x as a positive finite float, or None (no usable SD)."""
    if x is None or isinstance(x, bool):
        return None
    f = float(x)
    return f if math.isfinite(f) and f > 0 else None


def _power_std(nc: Any, df: Any, alpha: float) -> np.ndarray:
    """Power of the two-sided one-sample t-test at noncentrality nc with df degrees of freedom:
    P(T > t_c) + P(T < -t_c) for T ~ noncentral t(df, nc), t_c = t_{1-alpha/2}(df)."""
    tc = sps.t.ppf(1 - alpha / 2, df)
    upper = sps.nct.sf(tc, df, nc)
    # scipy's nct.cdf(-tc) returns NaN deep in the tail (df 1, nc 12.5); by symmetry it is
    # nct.sf(tc, df, -nc), and P(T < -tc) <= P(T < 0) = Phi(-nc) bounds it where that fails.
    bound = sps.norm.cdf(-np.asarray(nc, dtype=np.float64))
    lower = sps.nct.sf(tc, df, -np.asarray(nc, dtype=np.float64))
    return upper + np.where(np.isfinite(lower), np.minimum(lower, bound), bound)


def power_paired_t(effect: float, sd_diff: float, n_seeds: int, alpha: float = 0.05) -> float:
    """Probability that the two-sided paired t-test across ``n_seeds`` seeds rejects at level
    ``alpha`` when the true mean difference is ``effect`` and the SD of the per-seed
    differences is ``sd_diff``: noncentral t with df = n - 1 and nc = effect * sqrt(n) / sd."""
    a = _check_alpha(alpha)
    sd = _positive(sd_diff)
    if sd is None or n_seeds < 2:
        raise CifarlensError("power needs at least 2 seeds and a positive SD of the differences")
    nc = abs(float(effect)) * math.sqrt(n_seeds) / sd
    return float(_power_std(nc, n_seeds - 1, a))


def minimal_detectable_effect(sd_diff: Any, n_seeds: Any, alpha: float = 0.05,
                              power: float = 0.8) -> float | None:
    """The smallest true mean difference the two-sided paired t-test with ``n_seeds`` seeds
    detects with probability ``power`` at level ``alpha``, in the units of ``sd_diff``.

    Solved exactly on the noncentral t (Brent's method on the noncentrality, where power rises
    monotonically from alpha), not with the normal approximation (z_{1-a/2} + z_power) sd /
    sqrt(n), which at 3 seeds understates it by a factor of 2 (1.62 instead of 3.26 SDs). None
    with fewer than 2 seeds or without a positive SD (nothing to plan from).
    """
    a = _check_alpha(alpha)
    pw = _check_power(power, a)
    sd = _positive(sd_diff)
    if sd is None or n_seeds is None or int(n_seeds) < 2:
        return None
    n = int(n_seeds)
    df = n - 1

    def gap(nc: float) -> float:
        return float(_power_std(nc, df, a)) - pw

    hi = float(sps.t.ppf(1 - a / 2, df) + sps.norm.ppf(pw)) + 1.0
    while gap(hi) <= 0:
        hi *= 2.0
    nc = optimize.brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return nc * sd / math.sqrt(n)


def seeds_needed(sd_diff: Any, effect: float, alpha: float = 0.05, power: float = 0.8,
                 max_seeds: int = MAX_SEEDS_PLANNED) -> int | None:
    """The smallest number of seeds (at least 2) whose paired t-test detects a true mean
    difference of ``effect`` with probability ``power`` at level ``alpha`` (noncentral t,
    exact), given the SD of the per-seed differences. None without a positive SD, or when
    even ``max_seeds`` seeds fall short."""
    a = _check_alpha(alpha)
    pw = _check_power(power, a)
    e = abs(float(effect))
    if not (math.isfinite(e) and e > 0):
        raise CifarlensError(f"the effect to detect must be a nonzero number, got {effect}")
    sd = _positive(sd_diff)
    if sd is None:
        return None
    ns = np.arange(2, max(int(max_seeds), 2) + 1)
    ok = np.flatnonzero(_power_std(e * np.sqrt(ns) / sd, ns - 1, a) >= pw)
    return int(ns[ok[0]]) if ok.size else None


def _moments(diffs: Any) -> tuple[int, float | None, float | None]:
    """(n, mean, sample SD) from per-seed differences or from a seed block's
    n / mean_diff / std_diff (summary.json: n; stats.paired_seed_test: n_seeds)."""
    if isinstance(diffs, Mapping):
        n = diffs.get("n", diffs.get("n_seeds"))
        mean, sd = diffs.get("mean_diff"), diffs.get("std_diff")
        if n is None or mean is None:
            raise CifarlensError("a seed summary needs n (or n_seeds) and mean_diff")
        return int(n), float(mean), (None if sd is None else float(sd))
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise CifarlensError("no per-seed differences")
    if not np.all(np.isfinite(d)):
        raise CifarlensError("per-seed differences must be finite numbers")
    return int(d.size), float(d.mean()), (float(np.std(d, ddof=1)) if d.size >= 2 else None)


def sd_from_interval(lo: Any, hi: Any, n: Any, level: float = 0.95) -> float | None:
    """The SD of the per-seed differences behind a paired t interval [lo, hi] over n seeds
    (half-width = t_{(1+level)/2}(n-1) SD / sqrt(n)): how a summary that kept only the
    interval is judged by `decide`. None without an interval or with under 2 seeds."""
    if lo is None or hi is None or n is None or int(n) < 2:
        return None
    tq = float(sps.t.ppf((1 + level) / 2, int(n) - 1))
    return (float(hi) - float(lo)) / 2 / tq * math.sqrt(int(n))


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided t-tests (TOST) of |mean difference| < margin at level alpha each."""

    margin: float
    n: int
    mean_diff: float | None
    p_lower: float | None  # H0: mean <= -margin
    p_upper: float | None  # H0: mean >= +margin
    p_value: float | None  # max of the two: equivalence is shown when it is below alpha
    lo: float | None  # the (1 - 2 alpha) t interval: inside +/-margin exactly when p < alpha
    hi: float | None
    level: float
    alpha: float
    equivalent: bool


def equivalence_test(diffs: Any, margin: float, alpha: float = 0.05) -> Equivalence:
    """TOST on seed-paired differences (Schuirmann 1987): equivalence within +/-margin is shown
    when both H0: mean <= -margin and H0: mean >= +margin are rejected by one-sided t-tests at
    ``alpha``, i.e. when the (1 - 2 alpha) t interval lies strictly inside (-margin, margin).
    That the two statements agree is the intersection-union principle; the size of the claim
    "equivalent" is alpha. Undefined (p None, not equivalent) with under 2 seeds or SD 0."""
    a = _check_alpha(alpha)
    m = _positive(margin)
    if m is None:
        raise CifarlensError(f"the equivalence margin must be a positive number, got {margin}")
    n, mean, sd = _moments(diffs)
    level = 1 - 2 * a
    if n < 2 or _positive(sd) is None:
        return Equivalence(m, n, mean, None, None, None, None, None, level, a, False)
    df, se = n - 1, float(sd) / math.sqrt(n)
    p_lower = float(sps.t.sf((mean + m) / se, df))
    p_upper = float(sps.t.cdf((mean - m) / se, df))
    half = float(sps.t.ppf(1 - a, df)) * se
    p = max(p_lower, p_upper)
    return Equivalence(m, n, mean, p_lower, p_upper, p, mean - half, mean + half, level, a,
                       p < a)


@dataclass(frozen=True)
class Decision:
    """The verdict about one change and every number it rests on (see ``decide``)."""

    decision: str
    reason: str
    n: int
    mean_diff: float | None
    sd_diff: float | None
    lo: float | None  # the (1 - alpha) t interval of the mean difference
    hi: float | None
    level: float
    p_value: float | None  # two-sided paired t-test
    p_adjusted: float | None  # the p the difference claim used (Holm's, when given)
    margin: float | None
    equivalence: Equivalence | None
    mde: float | None  # smallest change detectable with these seeds at alpha and power
    detect: float  # the change the seeds plan is for (--detect)
    seeds_for_detect: int | None
    alpha: float
    power: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _t_interval(n: int, mean: float, sd: float, alpha: float) -> tuple[float, float, float]:
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, n - 1))
    return mean - half, mean + half, p


def _p_or_none(p: Any, name: str) -> float | None:
    if p is None:
        return None
    f = float(p)
    if not 0.0 <= f <= 1.0:
        raise CifarlensError(f"{name} must lie in [0, 1], got {p}")
    return f


def decide(diffs: Any, margin: float | None = None, alpha: float = 0.05,
           p_adjusted: float | None = None, *, p_equiv_adjusted: float | None = None,
           detect: float = 0.01, power: float = 0.8) -> Decision:
    """The verdict every sentence about a change uses, from the per-seed differences (or a
    seed block's n / mean_diff / std_diff), in this order:

    - "helped" / "hurt": the (1 - alpha) t interval excludes 0 and the p-value the claim uses
      is below alpha; that is the paired t-test's own p, or ``p_adjusted`` (Holm's over the
      changes of an ablation) when given, so the headline and the table agree.
    - "equivalent": two one-sided tests show the mean within +/-``margin`` (the (1 - 2 alpha)
      interval lies inside it); ``p_equiv_adjusted`` replaces the TOST p when the caller
      adjusts a family of equivalence claims.
    - "not decided": neither; the interval holds 0 (or its exclusion did not survive the
      adjustment) and reaches beyond the margin: the study cannot tell.
    - "no detectable difference": as "not decided", but no margin was set, so equivalence was
      not asked.
    - "not tested": under 2 seeds or every seed gave the same difference (no t-test).

    A significant change can also lie within the margin (``equivalence.equivalent``): a real but
    small effect; it is still "helped"/"hurt". The power numbers (``mde``, ``seeds_for_detect``)
    come from the observed SD and are reported with every decision but never change it.
    """
    a = _check_alpha(alpha)
    pw = _check_power(power, a)
    m = None if margin is None else _positive(margin)
    if margin is not None and m is None:
        raise CifarlensError(f"the equivalence margin must be a positive number, got {margin}")
    det = _positive(detect)
    if det is None:
        raise CifarlensError(f"the change to detect must be a positive number, got {detect}")
    pa_given = _p_or_none(p_adjusted, "p_adjusted")
    pe_given = _p_or_none(p_equiv_adjusted, "p_equiv_adjusted")
    n, mean, sd = _moments(diffs)
    base = dict(n=n, mean_diff=mean, sd_diff=sd, level=1 - a, margin=m, detect=det, alpha=a,
                power=pw)
    if n < 2 or _positive(sd) is None:
        why = ("one seed per arm: no seed-to-seed variance to test against" if n < 2 else
               "every seed gave the same difference: its variance is 0, so the t-test is "
               "undefined")
        return Decision("not tested", why, lo=None, hi=None, p_value=None, p_adjusted=None,
                        equivalence=None, mde=None, seeds_for_detect=None, **base)
    lo, hi, p = _t_interval(n, float(mean), float(sd), a)
    pa = p if pa_given is None else pa_given
    eq = equivalence_test(diffs, m, a) if m is not None else None
    mde = minimal_detectable_effect(sd, n, a, pw)
    k = seeds_needed(sd, det, a, pw)
    excludes = lo > 0 or hi < 0
    adj = "adjusted " if pa_given is not None else ""
    if excludes and pa < a:
        decision = "helped" if lo > 0 else "hurt"
        why = f"the {1 - a:.0%} interval excludes 0 and the {adj}p = {pa:.2g} < {a:g}"
    elif eq is not None and (eq.p_value if pe_given is None else pe_given) < a:
        decision = "equivalent"
        why = (f"the {eq.level:.0%} interval lies within +/-{m:g} (two one-sided tests, "
               f"p = {(eq.p_value if pe_given is None else pe_given):.2g})")
    else:
        decision = "not decided" if m is not None else "no detectable difference"
        why = (f"the interval excludes 0 (p = {p:.2g}) but the adjusted p = {pa:.2g} is not "
               f"below {a:g}" if excludes else "the interval holds 0")
        if eq is None:
            why += "; no equivalence margin was set"
        elif eq.equivalent:  # only an adjusted TOST p can refuse a raw equivalence
            why += f"; equivalence within +/-{m:g} did not survive the adjustment"
        else:
            why += f"; it reaches beyond +/-{m:g}"
    return Decision(decision, why, lo=lo, hi=hi, p_value=p, p_adjusted=pa, equivalence=eq,
                    mde=mde, seeds_for_detect=k, **base)


def _wins(x: np.ndarray) -> np.ndarray:
    """1 where x > 0, 1/2 on ties, 0 below: the probability-of-improvement kernel."""
    return (x > 0).astype(np.float64) + 0.5 * (x == 0)


def prob_improvement(acc_a: Any, acc_b: Any, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95, paired: bool = True) -> dict[str, Any]:
    """P(variant > baseline) across seeds, ties counting 1/2, with a percentile bootstrap
    interval over seeds (seeded, so reproducible).

    ``paired=True``: the share of seeds whose variant beat the baseline trained with the same
    seed (the study's pairing: same split and initialization). ``paired=False``: rliable's
    probability of improvement (Agarwal et al. 2021), the Mann-Whitney U over all (variant run,
    baseline run) pairs divided by n^2, i.e. Bouthillier et al.'s P(A > B) between independent
    runs. The bootstrap draws seeds with replacement and keeps both arms of a drawn seed, as the
    runs are paired. With 3 seeds the estimate can only take a few values and the interval is
    wide: it says how little a handful of seeds shows.
    """
    a = np.asarray(acc_a, dtype=np.float64).ravel()
    b = np.asarray(acc_b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise CifarlensError(f"acc_a ({a.size}) and acc_b ({b.size}) must be equal-length, "
                             "one entry per seed")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise CifarlensError("seed accuracies must be finite numbers")
    if not 0 < level < 1:
        raise CifarlensError(f"level must be between 0 and 1, got {level}")
    if n_boot < 2:
        raise CifarlensError(f"n_boot must be at least 2, got {n_boot}")
    n = a.size
    wins = _wins(b - a) if paired else _wins(b[:, None] - a[None, :])  # (n,) or (n_b, n_a)
    est = float(wins.mean())
    out = {"p": est, "lo": None, "hi": None, "level": level, "n": n, "paired": paired,
           "n_boot": n_boot, "method": ("share of seed pairs, percentile bootstrap over seeds"
                                        if paired else "Mann-Whitney U / n^2 over all run "
                                        "pairs (rliable), percentile bootstrap over seeds")}
    if n < 2:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = (wins[idx].mean(axis=1) if paired
            else wins[idx[:, :, None], idx[:, None, :]].mean(axis=(1, 2)))
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    out.update(lo=float(lo), hi=float(hi))
    return out
