"""How many seeds a study runs and how its verdicts are judged: a fixed number of seed pairs,
or `--seeds auto` (waves of pairs until the sequential rule decides), the equivalence margin and
the change the power sentence plans for. `run_study(seeds=...)` takes an int, "auto" or a
`Design`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cifarlens.analysis.sequential import MAX_SEEDS, wave_looks
from cifarlens.errors import CifarlensError
from cifarlens.study.plan import DEFAULT_SEEDS
from cifarlens.study.schema_verdicts import VerdictSettings

AUTO = "auto"
ALPHA = 0.05  # every verdict's two-sided level (and each TOST side's)
POWER = 0.8   # the power the detectable change is stated at
MARGIN = 0.01  # --margin 1 (point): "equivalent" means within +/-1 point
DETECT = 0.01  # --detect 1 (point): the power sentence says how many seeds 1 point needs
FIRST_LOOK = 3  # --seeds auto looks first at 3 seeds: 2 degrees of freedom


@dataclass(frozen=True)
class Design:
    """`seeds`: a number of seed pairs, or "auto" (at most `max_seeds`); `margin` and `detect`
    in accuracy units (0.01 is one point)."""

    seeds: int | str = DEFAULT_SEEDS
    max_seeds: int = MAX_SEEDS
    margin: float = MARGIN
    detect: float = DETECT

    def __post_init__(self) -> None:
        if self.seeds != AUTO and (isinstance(self.seeds, bool)
                                   or not isinstance(self.seeds, int) or self.seeds < 1):
            raise CifarlensError(f"--seeds must be a positive number or 'auto', got "
                                 f"{str(self.seeds)[:20]}")
        if not 2 <= self.max_seeds <= 1000:
            raise CifarlensError(f"--max-seeds must be from 2 to 1000, got {self.max_seeds}")
        for name, v in (("margin", self.margin), ("detect", self.detect)):
            if not (math.isfinite(v) and 0 < v < 1):
                raise CifarlensError(f"--{name} must be a positive number of points below 100, "
                                     f"got {v * 100:g}")

    @property
    def auto(self) -> bool:
        return self.seeds == AUTO

    def looks(self, wave: int) -> tuple[int, ...]:
        """The seed counts --seeds auto looks at, for waves of `wave` pairs."""
        return wave_looks(wave, self.max_seeds, min(FIRST_LOOK, self.max_seeds))

    def first_seeds(self, wave: int) -> int:
        """Seeds a study trains before its first look (fixed: all of them)."""
        return self.looks(wave)[0] if self.auto else int(self.seeds)

    def settings(self, vary: list[str]) -> VerdictSettings:
        return VerdictSettings(margin=self.margin, detect=self.detect, alpha=ALPHA, power=POWER,
                               seeds=AUTO if self.auto else "fixed",
                               max_seeds=self.max_seeds if self.auto else None, vary=vary)

    def record(self) -> dict[str, Any]:
        """What study.json keeps (a resumed study is judged the same way)."""
        return {"seeds": self.seeds, "max_seeds": self.max_seeds, "margin": self.margin,
                "detect": self.detect}


def as_design(seeds: int | str | Design) -> Design:
    return seeds if isinstance(seeds, Design) else Design(seeds=seeds)


def wave_pairs(engine: Any, arms: int) -> int:
    """Seed pairs per wave: as many runs as the engine runs at once (`jobs`; one for the
    local engine), shared among the arms, at least one pair."""
    return max(1, int(getattr(engine, "jobs", 1) or 1) // max(arms, 1))
