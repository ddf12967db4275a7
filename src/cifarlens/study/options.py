"""What a study computes beyond training both arms and comparing their clean accuracy: one
object, so `run_study` keeps a short signature as analyses are added."""

from __future__ import annotations

from dataclasses import dataclass

from cifarlens.analysis.corruptions import CORRUPTIONS
from cifarlens.errors import CifarlensError
from cifarlens.stages.robustness import RobustnessRequest

DEFAULT_FAILURES_TOP = 12


@dataclass(frozen=True)
class StudyOptions:
    """`failures_top`: the first seed's baseline failures found, explained and tracked into
    every variant. `robustness`: evaluate every run of every arm under the common corruptions
    (None: not at all) and compare the arms across seeds (docs/robustness.md)."""

    failures_top: int = DEFAULT_FAILURES_TOP
    robustness: RobustnessRequest | None = None

    def check(self) -> None:
        if self.failures_top < 1:
            raise CifarlensError(f"failures to track must be at least 1, got {self.failures_top}")
        if self.robustness is not None:
            self.robustness.plan("cpu")  # unknown names and severities refused before training
            asked = self.robustness.corruptions
            if asked is not None and not any(n in CORRUPTIONS for n in asked):
                raise CifarlensError("a study's robustness needs at least one of the 15 main "
                                     "corruptions (the held-out four are not in the mCE)")
