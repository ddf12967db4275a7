"""The robustness parts of STUDY/summary.json (`cifarlens study --robustness`), as types.

Kept beside schema.py (which imports them) so the contract file stays a size a reader can hold;
`schema.from_json` checks these keys like every other. Every field that holds them is optional
with a default, so summaries written without --robustness, or before it existed, still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Num = float  # as schema.Num: an int is accepted where a float is declared, a bool never


@dataclass
class ArmTest:
    """Variant minus baseline in accuracy under corruption (a family's or all 15 corruptions'),
    paired by seed: `analysis.stats.paired_seed_test`'s record, with the Holm-adjusted p-value
    (families only) and the verdict ("helped" = more robust, "hurt", "no detectable
    difference", "not tested")."""

    n_seeds: int
    mean_a: Num
    mean_b: Num
    mean_diff: Num
    level: Num
    method: str
    verdict: str
    std_a: Num | None = None
    std_b: Num | None = None
    std_diff: Num | None = None
    t: Num | None = None
    df: int | None = None
    p_value: Num | None = None
    lo: Num | None = None
    hi: Num | None = None
    note: str | None = None
    p_holm: Num | None = None


@dataclass
class ArmMce:
    """Each arm's unnormalised mCE (mean over the seeds), as a fraction."""

    baseline: Num | None
    variant: Num | None


@dataclass
class RelativeMce:
    """The variant's mCE and relative mCE with the baseline arm's errors in AlexNet's place
    (1.0: the baseline's level), per seed and on average."""

    normaliser: str
    per_seed: list[Num | None]
    mean: Num | None
    mce_per_seed: list[Num | None]
    mce_mean: Num | None


@dataclass
class RobustnessComparison:
    """One change against the baseline under corruption (`analysis.robustness.compare_arms`)."""

    families: dict[str, ArmTest]
    overall: ArmTest
    alpha: Num
    level: Num
    n_seeds: int
    n_images: int
    mce: ArmMce
    relative_mce_normalised: RelativeMce
    source: str | None = None


@dataclass
class RobustnessSetup:
    """What every run was evaluated on, and the baseline arm's own numbers (means over seeds)."""

    source: str                     # "corruptions computed locally, not the published ..."
    reference: str                  # the definitions' source
    corruptions: list[str]          # the main ones (the mCE's)
    severities: list[int]
    n_images: int                   # class-balanced test images, the same for every run
    normaliser: str                 # what relative mCE is normalised by (AlexNet's: not here)
    held_out: list[str] = field(default_factory=list)
    families: dict[str, str] = field(default_factory=dict)
    stand_ins: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    baseline_clean: Num | None = None
    baseline_corruption_accuracy: Num | None = None
    baseline_mce: Num | None = None
    baseline_family_accuracy: dict[str, Num] = field(default_factory=dict)


@dataclass
class FailureCorruption:
    """A tracked failure's corrupted versions (every main corruption and severity run): how
    many each model of the first seed's pair gets right."""

    conditions: int
    baseline_right: int
    variant_right: int
