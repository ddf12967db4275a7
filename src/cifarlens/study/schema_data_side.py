"""The data side of the failures in summary.json (`StudySummary.data_side`): the training images
the baseline represents like each tracked failure, the tested share of them in the predicted
class, the change seen through them, and training-set label issues from the seeds' val splits.

Types only, read and written by `study/schema.py`'s checked `from_json` / `to_json`; built by
`study/data_side.py`. Every field is optional at the top (`data_side` is None in a summary
written before it, or where the neighbours were not computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Num = float  # as in study/schema.py: an int is accepted where a float is declared


@dataclass
class Neighbour:
    """One training image: its dataset index (as in split.npz), label and cosine similarity."""

    index: int
    label: int
    similarity: Num
    name: str | None = None


@dataclass
class FailureNeighbours:
    """A tracked failure of the baseline (first seed) and its k nearest training images of the
    predicted and of the true class; `share`: of its k nearest over all classes, the share
    labelled with the predicted class; `claim`: its own sentence is supported."""

    rank: int
    index: int
    true_name: str
    pred_name: str
    share: Num | None
    claim: bool
    pred: list[Neighbour] = field(default_factory=list)
    true: list[Neighbour] = field(default_factory=list)


@dataclass
class ShareTest:
    """Failures' predicted-class share against correct images of the same true class
    (analysis.neighbours.neighbour_share): clusters = true classes."""

    n_failures: int
    n_tested: int
    n_classes: int
    n_reference: int
    mean_share: Num | None
    mean_reference: Num | None
    mean_diff: Num | None
    ci: list[Num | None]
    p: Num | None
    alpha: Num
    resamples: int
    supported: bool
    noise: str
    n_claims: int | None = None


@dataclass
class ShareChange:
    """The same images under the baseline and the variant: the share of their neighbours with
    the baseline's predicted label, variant minus baseline (analysis.neighbours.share_change)."""

    n: int
    n_clusters: int
    mean_base: Num | None
    mean_variant: Num | None
    mean_diff: Num | None
    ci: list[Num | None]
    p: Num | None
    fell: bool
    rose: bool
    noise: str


@dataclass
class DataChange:
    """One change seen through the data, on the first seed's pair: the failures it fixed, and
    those both models get wrong the same way as the reference."""

    slug: str
    change: str
    seed: int
    fixed: ShareChange
    still_wrong: ShareChange


@dataclass
class LabelIssue:
    rank: int
    index: int                   # the training image's dataset index
    label: str                   # the given label
    suggested: str               # argmax of the mean out-of-sample probabilities
    self_confidence: Num         # mean probability of the given label over covering seeds
    votes: int
    covering: int
    neighbours: list[Neighbour] = field(default_factory=list)


@dataclass
class SeedFlags:
    seed: int
    n: int                       # images in its val split
    flagged: int
    val_top1: Num | None = None  # the model's accuracy on those images (given labels)


@dataclass
class LabelIssues:
    """cleanlab's confident learning on each baseline seed's out-of-sample val probabilities,
    merged over the seeds (analysis.label_issues.find_issues)."""

    method: str
    n_train: int
    n_covered: int
    coverage: Num
    n_flagged: int
    min_share: Num
    seeds: list[SeedFlags] = field(default_factory=list)
    top: list[LabelIssue] = field(default_factory=list)
    csv: str | None = None


@dataclass
class DataSide:
    layer: str
    k: int
    what: str
    run: str                     # the baseline run whose feature space it is
    failures: list[FailureNeighbours] = field(default_factory=list)
    share: ShareTest | None = None
    changes: list[DataChange] = field(default_factory=list)
    label_issues: LabelIssues | None = None
