"""summary.json's verdict records (issue 22), as types: the decision about a change with the
power it had, equivalence, the sequential rule's looks, where the variance comes from,
P(variant > baseline), the seed-level calibration test, ECE intervals, the clustered superclass
test, convergence and the study's verdict settings.

Each mirrors the dict an `analysis/` function returns (`power.decide(...).as_dict()`,
`calibration_stats.ece_seed_change`, ...), so the summary stores that function's own record.
Every field a version-2 summary written before these records lacks is optional where it hangs
(`study/schema.py`), so older files still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Num = float  # JSON numbers (see schema.py)


@dataclass
class Equivalence:
    """Two one-sided t-tests of |mean difference| < margin (power.equivalence_test)."""

    margin: Num
    n: int
    equivalent: bool
    level: Num
    alpha: Num
    mean_diff: Num | None = None
    p_lower: Num | None = None
    p_upper: Num | None = None
    p_value: Num | None = None
    lo: Num | None = None
    hi: Num | None = None


@dataclass
class Decision:
    """The verdict about one change and every number it rests on (power.decide): helped, hurt,
    equivalent, not decided, no detectable difference or not tested; `mde` is the smallest
    change the seeds could detect (accuracy units), `seeds_for_detect` the seeds `detect`
    needs. `rule` "sequential": the decision and interval are the --seeds auto rule's."""

    decision: str
    reason: str
    n: int
    level: Num
    alpha: Num
    power: Num
    detect: Num
    mean_diff: Num | None = None
    sd_diff: Num | None = None
    lo: Num | None = None
    hi: Num | None = None
    p_value: Num | None = None
    p_adjusted: Num | None = None
    margin: Num | None = None
    equivalence: Equivalence | None = None
    mde: Num | None = None
    seeds_for_detect: int | None = None
    rule: str | None = None


@dataclass
class ProbImprovement:
    """P(variant > baseline) across seeds with its bootstrap interval
    (power.prob_improvement)."""

    p: Num
    n: int
    level: Num
    paired: bool
    n_boot: int
    method: str
    lo: Num | None = None
    hi: Num | None = None


@dataclass
class NoiseSources:
    """The seed-level SD next to the test-sampling SD (noise.variance_sources)."""

    n_seeds: int
    n_images: int
    seed_sd: Num
    independent_sd: Num
    image_sampling_sd: Num
    test_set_var: Num
    se_seeds: Num
    se_both: Num
    image_sampling_sd_per_seed: list[Num] = field(default_factory=list)


@dataclass
class Look:
    """Where the --seeds auto rule stood after one look (sequential.Look); a boundary that
    spends nothing (infinite) is null."""

    decision: str
    stop: bool
    n: int
    look: int
    mean_diff: Num
    sd_diff: Num
    alpha: Num
    spending: str
    looks: list[int] = field(default_factory=list)
    t: Num | None = None
    boundary: Num | None = None
    lo: Num | None = None
    hi: Num | None = None
    eq_boundary: Num | None = None
    eq_lo: Num | None = None
    eq_hi: Num | None = None
    margin: Num | None = None


@dataclass
class Sequential:
    """The --seeds auto rule for one change: its design and every look the study made."""

    looks: list[int]
    alpha: Num
    spending: str
    max_seeds: int
    wave: int
    history: list[Look] = field(default_factory=list)


@dataclass
class EceSeedChange(Decision):
    """The seed-level paired test of ECE (calibration_stats.ece_seed_change): `verdict` is
    the only calibration word a report may use."""

    verdict: str = "not tested"
    per_seed: list[Num] = field(default_factory=list)
    covers: str | None = None


@dataclass
class EceInterval:
    ece: Num
    lo: Num
    hi: Num
    se: Num


@dataclass
class EceChange:
    diff: Num
    lo: Num
    hi: Num
    se: Num


@dataclass
class EceIntervals:
    """ECE before and after temperature scaling with bootstrap intervals over the test images
    (calibration_stats.ece_scaling_intervals)."""

    before: EceInterval
    after: EceInterval
    change: EceChange
    temperature: Num
    level: Num
    n: int
    n_bins: int
    n_boot: int
    method: str
    covers: str


@dataclass
class SuperclassCluster:
    """The within-superclass error share against chance with a cluster bootstrap by true class
    (superclass_stats.superclass_cluster_test)."""

    errors: int
    errors_within_superclass: int
    decision: str
    level: Num
    n_boot: int
    clusters: int
    clusters_with_errors: int
    method: str
    covers: str
    share: Num | None = None
    chance_share: Num | None = None
    diff: Num | None = None
    ratio: Num | None = None
    share_ci: list[Num] | None = None
    diff_ci: list[Num] | None = None
    share_se: Num | None = None


@dataclass
class Convergence:
    """Whether the study's runs had stopped improving when training ended: `converged` is
    false when any run's validation accuracy or loss was still improving (`rule`), null when
    a run could not be judged."""

    runs_checked: int
    rule: str
    converged: bool | None = None  # None: some run could not be judged (under 2 epochs)
    still_improving: list[str] = field(default_factory=list)


@dataclass
class VerdictSettings:
    """The settings every verdict was judged with: the equivalence margin and the change the
    power sentence plans for (accuracy units), the test level and power, how the seeds were
    chosen ("fixed" or "auto", up to `max_seeds`) and which sources of randomness differed
    between seeds."""

    margin: Num
    detect: Num
    alpha: Num
    power: Num
    seeds: str = "fixed"
    max_seeds: int | None = None
    vary: list[str] = field(default_factory=list)
