"""`--seeds auto`: seed pairs in waves until the sequential rule decides, or `--max-seeds`.

A wave is as many seed pairs as the engine runs at once (one pair with the local engine). The
rule (analysis/sequential.py: a group-sequential t-test with O'Brien-Fleming-type alpha
spending, boundaries computed for the t statistic) looks after every wave from 3 seeds on, at
the seed counts `Design.looks(wave)` fixes before the first run, so its false-positive rate stays
at alpha over all looks. With several changes each is judged at alpha / K (Bonferroni), and the
study goes on while any change is undecided. Every look is recorded in study.json (and from
there in summary.json), so a resumed study continues where it stopped and the report shows each
look.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifarlens.analysis.sequential import sequential_rule
from cifarlens.study.design import ALPHA, Design
from cifarlens.study.plan import recorded_changes
from cifarlens.study.schema import to_json
from cifarlens.study.verdicts import look_record

Produce = Callable[[list[int]], None]  # train and analyse every run of these seeds
Diffs = Callable[[str, list[int]], list[float]]  # per-seed differences of one change


def change_looks(diffs: list[float], looks: tuple[int, ...], design: Design,
                 alpha: float) -> list[dict[str, Any]]:
    """The rule at every planned look the differences reach, up to the first that stops."""
    out = []
    for n in looks:
        if n > len(diffs):
            break
        look = to_json(look_record(sequential_rule(diffs[:n], looks, design.margin, alpha)))
        out.append(look)
        if look["stop"]:
            break
    return out


def run_waves(plan: dict[str, Any], design: Design, wave: int, produce: Produce, diffs: Diffs,
              say: Callable[[str], None]) -> None:
    """Train seeds in waves until every change's rule stops or the last look; `plan["seeds"]`
    grows with each wave and `plan["sequential"]` records the design and every look. `produce`
    trains the runs of the seeds it is given (those of earlier waves are finished)."""
    base = plan["seeds"][0]
    looks = design.looks(wave)
    changes = [c["slug"] for c in recorded_changes(plan)]
    alpha = ALPHA / len(changes)
    plan["sequential"] = {"wave": wave, "looks": {}}
    n = max(len(plan["seeds"]), looks[0])
    while True:
        plan["seeds"] = [base + i for i in range(n)]
        produce(plan["seeds"])
        plan["sequential"]["looks"] = {
            slug: change_looks(diffs(slug, plan["seeds"]), looks, design, alpha)
            for slug in changes}
        last = {slug: h[-1] for slug, h in plan["sequential"]["looks"].items() if h}
        for slug, look in last.items():
            if look["n"] == n:
                say(f"seeds auto: {slug} after {n} seeds: {look['decision']}")
        if n >= looks[-1] or all(x["stop"] for x in last.values()):
            return
        n = next(k for k in looks if k > n)
