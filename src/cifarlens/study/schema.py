"""STUDY/summary.json as types: the contract between the study that writes it and the report
that reads it.

`StudySummary` and the dataclasses under it name every key, nested ones included, with its
type. The study builds these objects and writes them with `write_summary` (checked on the way
out: a producer bug stops before the file exists); the report gets them from `read_summary`
(checked on the way in: a damaged or hand-edited summary is one line naming the key). A file
records `schema_version`. Version 1, the summary of cifarlens before the typed schema, is read
too: it had no version and repeated the first change's blocks at the top level ("change",
"models.variant", "comparison", "failures.top/tracking", "figures.gradcam_tracking"), which
version 2 keeps only in `variants`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from cifarlens._io import read_json, write_json
from cifarlens.errors import CifarlensError
from cifarlens.study import schema_verdicts as V  # issue 22's records
from cifarlens.study.schema_data_side import DataSide
from cifarlens.study.schema_robustness import (
    FailureCorruption,
    RobustnessComparison,
    RobustnessSetup,
)

SCHEMA_VERSION = 2
Num = float  # JSON numbers: an int is accepted where a float is declared, a bool never
Interval = list  # [lo, hi], each a number or null

# --- one model ---------------------------------------------------------------------------------


@dataclass
class Confusion:
    true_name: str
    pred_name: str
    count: int
    share_of_true: Num
    true: int | None = None
    pred: int | None = None


@dataclass
class Superclass:
    coarse_accuracy: Num
    within_superclass_share: Num | None = None
    chance_share: Num | None = None
    errors: int | None = None
    errors_within_superclass: int | None = None
    binomial_p: Num | None = None
    share_ci: list[Num | None] | None = None
    cluster: V.SuperclassCluster | None = None  # the test that concludes (issue 22)


@dataclass
class SplitMetrics:
    loss: Num
    top1: Num
    top5: Num
    macro_f1: Num
    ece: Num
    mce: Num
    brier: Num
    nll: Num
    top_confusions: list[Confusion] | None = None   # test only
    superclass: Superclass | None = None           # where the data has superclasses


@dataclass
class Calibration:
    """Temperature scaling fitted on val, applied to test: before and after."""

    temperature: Num | None = None
    ece_before: Num | None = None
    ece_after: Num | None = None
    nll_before: Num | None = None
    nll_after: Num | None = None
    mce_before: Num | None = None
    mce_after: Num | None = None
    brier_before: Num | None = None
    brier_after: Num | None = None
    mce_count_before: int | None = None
    mce_count_after: int | None = None
    intervals: V.EceIntervals | None = None  # bootstrap over test images, before and after


@dataclass
class SeedScore:
    seed: int
    test_top1: Num
    test_ece: Num | None = None


@dataclass
class Model:
    """One arm: every single-model number is seed `seed`'s; `per_seed` has each seed's test
    accuracy."""

    run: str                     # relative to the study folder
    params: int
    best_epoch: int
    val: SplitMetrics
    test: SplitMetrics
    flops: int | None = None
    train_time_s: Num | None = None
    calibration: Calibration = field(default_factory=Calibration)
    per_seed: list[SeedScore] = field(default_factory=list)
    seed: int | None = None


# --- one change against the baseline ----------------------------------------------------------


@dataclass
class Change:
    key: str
    baseline: Any                # a training setting's value: str, number, bool or null
    variant: Any


@dataclass
class AccuracyDifference:
    """The seed-`pair_seed` pair on the same test images (test-image sampling only)."""

    diff: Num
    lo: Num | None
    hi: Num | None
    level: Num | None = None
    method: str | None = None
    n: int | None = None
    acc_a: Num | None = None
    acc_b: Num | None = None
    se: Num | None = None


@dataclass
class McNemar:
    n: int
    both_right: int
    both_wrong: int
    a_only: int
    b_only: int
    p_value: Num
    statistic: int | None = None


@dataclass
class SeedMcNemar:
    """One seed's pair: McNemar's test and the paired interval of the difference."""

    seed: int
    a_only: int
    b_only: int
    p_value: Num
    diff: Num | None = None
    lo: Num | None = None
    hi: Num | None = None
    n: int | None = None
    both_right: int | None = None
    both_wrong: int | None = None
    statistic: int | None = None


@dataclass
class ClassChange:
    name: str
    before: Num | None
    after: Num | None
    delta: Num | None
    n: int | None = None


@dataclass
class PerClass:
    improved: list[ClassChange]
    worsened: list[ClassChange]


@dataclass
class SeedComparison:
    """The verdict about a change: the paired t-test across seeds (2+ seeds)."""

    n: int
    mean_a: Num
    mean_b: Num
    mean_diff: Num
    ci: list[Num | None]
    mcnemar_per_seed: list[SeedMcNemar] = field(default_factory=list)
    level: Num = 0.95
    method: str = "paired_t"
    covers: str = "training seeds and test-image sampling"
    std_a: Num | None = None
    std_b: Num | None = None
    std_diff: Num | None = None
    t: Num | None = None
    df: int | None = None
    p_value: Num | None = None
    note: str | None = None
    decision: V.Decision | None = None  # the verdict every sentence states (power.decide)
    prob_improvement: V.ProbImprovement | None = None
    noise: V.NoiseSources | None = None
    sequential: V.Sequential | None = None  # --seeds auto: the rule and its looks


@dataclass
class Comparison:
    accuracy_difference: AccuracyDifference
    mcnemar: McNemar
    per_class: PerClass
    ece_change: Num | None = None
    seeds: SeedComparison | None = None
    pair_seed: int | None = None  # the seed whose pair the one-pair numbers describe
    verdict_basis: str | None = None  # "seeds" or "one_pair"
    ece_seeds: V.EceSeedChange | None = None  # the seed-level test of ECE


@dataclass
class VariantOutcome:
    """What became of a tracked baseline failure in the variant."""

    pred_name: str
    confidence: Num
    true_prob: Num
    status: str                  # "fixed", "still_wrong" or "other_wrong"


@dataclass
class TrackedFailure:
    rank: int
    index: int
    true_name: str
    pred_name: str
    confidence: Num
    label_error_suspect: bool
    variant: VariantOutcome
    raw_confidence: Num | None = None
    margin: Num | None = None
    true_prob: Num | None = None
    true_rank: int | None = None
    corruption: FailureCorruption | None = None   # study --robustness


@dataclass
class TrackCounts:
    fixed: int
    still_wrong: int
    other_wrong: int
    tracked: int


@dataclass
class AllErrors:
    errors: int
    fixed: int
    share: Num | None


@dataclass
class Tracking(TrackCounts):
    label_suspects: TrackCounts | None = None
    others: TrackCounts | None = None
    all_errors: AllErrors | None = None


@dataclass
class VariantFailures:
    top: list[TrackedFailure]
    tracking: Tracking


@dataclass
class Variant:
    """One change against the shared baseline. The first is the report's main change."""

    change: Change
    slug: str                    # the variant arm's name: runs/<slug>-sN
    runs: list[str]
    model: Model
    comparison: Comparison
    failures: VariantFailures
    figures: dict[str, str]
    robustness: RobustnessComparison | None = None   # study --robustness


# --- the baseline's failures and their explanation ---------------------------------------------


@dataclass
class ClassCount:
    name: str
    count: int


@dataclass
class Failures:
    """The first seed's baseline: its errors on the test split (the tracked ones are in each
    variant's `failures`)."""

    split: str
    total_wrong: int
    confident_threshold: Num
    confident_wrong: int
    label_error_suspects: int
    per_class_confident_errors: list[ClassCount] = field(default_factory=list)
    confident_wrong_raw: int | None = None
    confidence_basis: str | None = None
    temperature: Num | None = None
    label_error_method: str | None = None
    cleanlab_issues: int | None = None


@dataclass
class Aucs:
    deletion_auc: Num | None = None
    insertion_auc: Num | None = None


@dataclass
class BootstrapDiff:
    diff: Num | None
    lo: Num | None
    hi: Num | None
    level: Num | None = None
    n: int | None = None
    method: str | None = None


@dataclass
class ReferenceComparison:
    """Grad-CAM against one reference map on the same images."""

    name: str
    deletion_auc: Num | None
    insertion_auc: Num | None
    deletion_diff: BootstrapDiff | None = None
    insertion_diff: BootstrapDiff | None = None


@dataclass
class FaithfulnessTests:
    n: int
    level: Num
    noise: str
    cells: list[int] | None = None
    comparisons: dict[str, ReferenceComparison] = field(default_factory=dict)


@dataclass
class BorderShare:
    border_px: int
    uniform: Num
    cells: list[int] | None = None
    cell_px: Num | None = None
    resolves_border: bool | None = None
    centre_prior: Num | None = None
    failures: Num | None = None
    n_failures: int | None = None
    correct: Num | None = None
    n_correct: int | None = None
    diff: Num | None = None
    p_value: Num | None = None
    test: str | None = None


@dataclass
class PointingGame:
    hit_rate: Num
    n: int
    on: str | None = None


@dataclass
class Explain:
    layer: str | None = None
    explained: int | None = None
    faithfulness: dict[str, Aucs] = field(default_factory=dict)
    faithfulness_tests: FaithfulnessTests | None = None
    border_share: BorderShare | None = None
    pointing_game: PointingGame | None = None
    model: str | None = None  # whose maps: "baseline"
    seed: int | None = None


# --- several changes ---------------------------------------------------------------------------


@dataclass
class SeedTest:
    seed: int
    diff: Num | None
    lo: Num | None
    hi: Num | None
    a_only: int
    b_only: int
    p_value: Num | None


@dataclass
class AblationRow:
    change: str
    key: str
    slug: str
    baseline_value: Any
    variant_value: Any
    before: Num
    after: Num
    diff: Num
    lo: Num | None
    hi: Num | None
    p: Num | None
    p_holm: Num | None
    verdict: str
    n_seeds: int
    per_seed_mcnemar: list[SeedTest]
    decision: V.Decision | None = None  # decide() with the Holm-adjusted p


@dataclass
class Ablation:
    method: str
    test: str
    correction: str
    m: int
    alpha: Num
    level: Num
    covers: str
    per_seed_covers: str
    rows: list[AblationRow]


# --- the study ---------------------------------------------------------------------------------


@dataclass
class SplitSizes:
    train: int
    val: int
    test: int
    train_used: int


@dataclass
class Normalization:
    mean: list[Num]
    std: list[Num]
    computed_on: str | None = None


@dataclass
class Environment:
    cifarlens: str | None = None
    torch: str | None = None
    python: str | None = None
    device: str | None = None
    device_name: str | None = None
    cpu_model: str | None = None
    gpu_model: str | None = None
    precision: str | None = None
    git_commit: str | None = None
    threads: int | None = None


@dataclass
class Browse:
    file: str
    csv: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rows: int | None = None


@dataclass
class Timing:
    total_s: Num | None = None
    train_s: Num | None = None
    evaluate_s: Num | None = None
    overlapped: bool | None = None
    runs_s: Num | None = None
    analysis_s: Num | None = None


@dataclass
class RunRecord:
    """Where one run was produced (the engine's record)."""

    name: str
    trained: bool
    train_s: Num
    analysis_s: Num
    host: str
    device: str | None = None
    gpu: str | None = None


@dataclass
class EngineRecord:
    """Which engine produced the runs (`local`, `processes`, `ray`, `slurm`), with what, and
    where each run ran. The Ray and Slurm fields are there only for those engines."""

    name: str
    runs: dict[str, RunRecord] = field(default_factory=dict)
    ray_address: str | None = None       # "local": an instance of the study's own
    ray_version: str | None = None
    slurm_partition: str | None = None   # None: the cluster's default partition
    slurm_gpus_per_run: int | None = None
    slurm_time: str | None = None        # as given (--slurm-time)
    submitit_version: str | None = None


@dataclass
class StudySummary:
    """Every number the report states. `variants[0]` is the main change (the report's one-change
    sections describe it); `ablation` is there with 2+ changes."""

    dataset: str
    data_source: str             # "official", "generated" or "user"
    num_classes: int
    split: SplitSizes
    config: dict[str, Any]       # the baseline's TrainConfig as recorded in study.json
    seeds: list[int]
    baseline: Model
    variants: list[Variant]
    failures: Failures
    figures: dict[str, str]
    environment: Environment
    schema_version: int = SCHEMA_VERSION
    title: str = "cifarlens study"
    created: str | None = None
    data_name: str | None = None
    normalization: Normalization | None = None
    explain: Explain | None = None
    ablation: Ablation | None = None
    browse: Browse | None = None
    timing: Timing | None = None
    engine: EngineRecord | None = None
    command: str | None = None
    verdicts: V.VerdictSettings | None = None
    convergence: V.Convergence | None = None
    data_side: DataSide | None = None  # neighbours and label issues (study/schema_data_side.py)
    robustness: RobustnessSetup | None = None   # study --robustness (each variant: its comparison)

    @property
    def main(self) -> Variant:
        """The first change: what the one-change sections describe."""
        return self.variants[0]


# --- reading and writing -----------------------------------------------------------------------

T = TypeVar("T")
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "an integer", float: "a number", type(None): "null"}.get(type(v),
                                                                             type(v).__name__)


def _convert(tp: Any, v: Any, where: str) -> Any:
    """`v` (parsed JSON) as type `tp`, or one CifarlensError naming `where`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, v, where)
            except CifarlensError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, v, where)
    if origin is list:
        if not isinstance(v, list):
            raise CifarlensError(f"{where} must be a list, not {_kind(v)}")
        (a,) = typing.get_args(tp)
        return [_convert(a, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise CifarlensError(f"{where} must be an object, not {_kind(v)}")
        _, a = typing.get_args(tp)
        return {str(k): _convert(a, x, f"{where}.{k}") for k, x in v.items()}
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CifarlensError(f"{where} must be a number, not {_kind(v)}")
        return v
    if tp in (int, str, bool):
        if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise CifarlensError(f"{where} must be {_kind(tp())}, not {_kind(v)}")
        return v
    raise CifarlensError(f"{where}: no rule for type {tp!r}")  # a schema bug, not the data's


def _from_dict(cls: type[T], obj: Any, where: str) -> T:
    if not isinstance(obj, dict):
        raise CifarlensError(f"{where} must be an object, not {_kind(obj)}")
    hints = _hints(cls)
    unknown = sorted(set(obj) - set(hints))
    if unknown:
        raise CifarlensError(f"{where} has an unknown key {unknown[0]!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in obj:
            kwargs[f.name] = _convert(hints[f.name], obj[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise CifarlensError(f"{where} has no {f.name!r}")
    return cls(**kwargs)


def from_json(cls: type[T], obj: Any, where: str = "summary") -> T:
    """Parsed JSON as `cls`, every nested key checked: one CifarlensError line naming the
    first key that is missing, unknown or of the wrong type."""
    return _from_dict(cls, obj, where)


def to_json(obj: Any) -> Any:
    """A schema object as JSON-ready data (the inverse of from_json)."""
    return dataclasses.asdict(obj)


def summary_from_json(obj: Any, where: str = "summary.json") -> StudySummary:
    """A summary of any version this cifarlens reads, as a StudySummary."""
    if not isinstance(obj, dict):
        raise CifarlensError(f"{where} is not a study summary: expected a JSON object, got "
                             f"{_kind(obj)}")
    version = obj.get("schema_version", 1)
    if version == 1:
        obj = upgrade_v1(obj, where)
    elif version != SCHEMA_VERSION:
        raise CifarlensError(f"{where} has schema version {str(version)[:20]}; this cifarlens "
                             f"reads versions 1 to {SCHEMA_VERSION} (a newer cifarlens wrote it)")
    return from_json(StudySummary, obj, where)


def upgrade_v1(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A version-1 summary in version 2's shape: the baseline's model moves to `baseline`, and
    the one-change copies at the top level go (`variants` holds them). A version-1 file from
    before several changes has no `variants`: its one change is built from the copies."""
    obj = dict(obj)
    models = obj.pop("models", None)
    if not isinstance(models, dict) or not isinstance(models.get("baseline"), dict):
        raise CifarlensError(f"{where} is not a study summary: no 'models' with a 'baseline'")
    change, comparison = obj.pop("change", None), obj.pop("comparison", None)
    # a part of the wrong type is left as it is, for from_json to name it
    fails = dict(obj["failures"]) if isinstance(obj.get("failures"), dict) else obj.get("failures")
    top, tracking = (fails.pop("top", None), fails.pop("tracking", None)) \
        if isinstance(fails, dict) else (None, None)
    figures = dict(obj["figures"]) if isinstance(obj.get("figures"), dict) else obj.get("figures")
    tracking_fig = figures.pop("gradcam_tracking", None) if isinstance(figures, dict) else None
    if not obj.get("variants"):
        run = models.get("variant", {}).get("run") if isinstance(models.get("variant"), dict) \
            else None
        obj["variants"] = [{"change": change, "slug": "variant", "runs": [run] if run else [],
                            "model": models.get("variant"), "comparison": comparison,
                            "failures": {"top": top, "tracking": tracking},
                            "figures": {"gradcam_tracking": tracking_fig}
                            if tracking_fig else {}}]
    obj["baseline"] = models["baseline"]
    obj["failures"], obj["figures"] = fails, figures
    obj["schema_version"] = SCHEMA_VERSION
    return obj


def read_summary(path: str | Path) -> StudySummary:
    path = Path(path)
    return summary_from_json(read_json(path), str(path))


def write_summary(path: str | Path, summary: StudySummary) -> dict[str, Any]:
    """Check `summary` (as the reader will) and write it atomically; returns the JSON data."""
    data = to_json(summary)
    summary_from_json(data, "the study's summary")  # a producer bug stops here, not in the report
    write_json(Path(path), data)
    return data
