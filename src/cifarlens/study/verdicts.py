"""The verdict records of a study (issue 22), computed from its runs: the decision about each
change with its power and equivalence test, P(variant > baseline), where the variance comes
from, the seed-level ECE test, ECE intervals, the clustered superclass test and convergence.

Each record is the `analysis/` function's own dict, typed by `study/schema_verdicts.py`;
`summary.py` hangs them on the summary. The report states only what these records conclude.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cifarlens.analysis import calibration_stats as C
from cifarlens.analysis import power as P
from cifarlens.analysis.convergence import convergence
from cifarlens.analysis.noise import variance_sources
from cifarlens.analysis.superclass_stats import superclass_cluster_test
from cifarlens.runs import Run
from cifarlens.study.design import ALPHA, POWER, Design
from cifarlens.study.schema import from_json
from cifarlens.study.schema_verdicts import (
    Convergence,
    Decision,
    EceIntervals,
    EceSeedChange,
    Look,
    NoiseSources,
    ProbImprovement,
    Sequential,
    SuperclassCluster,
)

Runs = dict[str, dict[int, Run]]
SPENDING_WORDS = {"obf": "O'Brien-Fleming-type", "pocock": "Pocock-type"}


def _finite_or_none(x: Any) -> Any:
    """JSON has no infinity: a boundary that spends nothing is recorded as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, tuple):
        return list(x)
    return x


def decision(diffs: Any, design: Design, p_adjusted: float | None = None) -> Decision:
    """power.decide on the per-seed differences with the study's margin and detect."""
    d = P.decide(diffs, design.margin, ALPHA, p_adjusted, detect=design.detect, power=POWER)
    return from_json(Decision, d.as_dict(), "the decision record")


def sequential_decision(base: Decision, look: Look) -> Decision:
    """The decision of a --seeds auto study: the sequential rule's verdict and its repeated
    interval (which hold alpha over all looks), with the power numbers of `base`."""
    word = look.decision if look.decision != "continue" else (
        "not decided" if look.margin is not None else "no detectable difference")
    b = f"|t| >= {look.boundary:.2f}" if look.boundary is not None else "no boundary"
    why = (f"the sequential rule at look {look.look} of {len(look.looks)} ({look.n} seeds, "
           f"{SPENDING_WORDS.get(look.spending, look.spending)} alpha spending, a difference "
           f"needs {b})")
    return dataclasses.replace(base, decision=word, reason=why, lo=look.lo, hi=look.hi,
                               rule="sequential")


def look_record(look: Any) -> Look:
    """A sequential.Look as the summary stores it."""
    data = {k: _finite_or_none(v) for k, v in look.__dict__.items()}
    return from_json(Look, data, "the sequential look")


def sequential_block(looks: list[Look], design: Design, wave: int) -> Sequential:
    return Sequential(looks=list(design.looks(wave)), alpha=looks[-1].alpha if looks else ALPHA,
                      spending=looks[-1].spending if looks else "obf",
                      max_seeds=design.max_seeds, wave=wave, history=looks)


def correct_matrix(runs: Runs, arm: str, seeds: list[int]) -> np.ndarray:
    """(seeds, test images) right/wrong of one arm."""
    rows = []
    for s in seeds:
        p = runs[arm][s].predictions("test")
        rows.append(p["pred"] == p["labels"])
    return np.stack(rows)


def seed_extras(runs: Runs, seeds: list[int], arm: str, acc_a: list[float],
                acc_b: list[float]) -> tuple[ProbImprovement, NoiseSources | None]:
    """P(variant > baseline) over the seed pairs, and the seed-level SD next to the
    test-sampling SD (2+ seeds)."""
    pi = from_json(ProbImprovement, P.prob_improvement(acc_a, acc_b), "P(improvement)")
    if len(seeds) < 2:
        return pi, None
    vs = variance_sources(correct_matrix(runs, "baseline", seeds),
                          correct_matrix(runs, arm, seeds))
    return pi, from_json(NoiseSources, vs, "the variance sources")


def ece_seeds(runs: Runs, seeds: list[int], arm: str, design: Design) -> EceSeedChange:
    """The seed-level paired test of ECE (variant minus baseline, seed s with seed s)."""
    ea = [runs["baseline"][s].metrics("test")["ece"] for s in seeds]
    eb = [runs[arm][s].metrics("test")["ece"] for s in seeds]
    rec = C.ece_seed_change(ea, eb, ALPHA, design.margin, design.detect)
    return from_json(EceSeedChange, rec, "the seed-level ECE test")


def ece_intervals(run: Run) -> EceIntervals | None:
    """ECE before and after temperature scaling of one run's test predictions, each with a
    bootstrap interval over the test images (the temperature fitted on validation)."""
    ts = run.metrics("test").get("temperature_scaling") or {}
    t = ts.get("temperature")
    if t is None:
        return None
    p = run.predictions("test")
    rec = C.ece_scaling_intervals(p["logits"], p["labels"], float(t))
    return from_json(EceIntervals, rec, "the ECE intervals")


def superclass_cluster(run: Run, fine_to_coarse: Any) -> SuperclassCluster | None:
    """The within-superclass error share with a cluster bootstrap by true class (None where the
    data has no superclasses)."""
    if fine_to_coarse is None:
        return None
    p = run.predictions("test")
    rec = superclass_cluster_test(p["labels"], p["pred"], fine_to_coarse)
    return from_json(SuperclassCluster, rec, "the clustered superclass test")


def study_convergence(runs: Runs) -> Convergence:
    """Whether every run of the study had stopped improving (analysis.convergence's rule)."""
    hists = {run.name: run.history() for arm in runs.values() for run in arm.values()}
    return from_json(Convergence, convergence(hists), "the convergence record")
