"""Whether training had stopped improving when it ended: a curve's rule, and a study's runs
judged by it (the verdict's "attributable to it" is qualified when they had not)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# "Still improving": the best epoch lies within the last 10% of epochs (at least the last
# one) AND the least-squares slope over the last 5 epochs points the improving way.
IMPROVING_TAIL = 0.10
IMPROVING_SLOPE_EPOCHS = 5
RULE = (f"a run is still improving when its validation accuracy (or loss) has its best epoch "
        f"within the last {IMPROVING_TAIL:.0%} of epochs and a last-{IMPROVING_SLOPE_EPOCHS}-"
        "epoch least-squares slope still rising (falling)")
CURVES = (("val_acc", True), ("val_loss", False))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def still_improving(values: Sequence[Any], higher_is_better: bool = True
                    ) -> dict[str, Any] | None:
    """{'best_epoch', 'epochs', 'slope'} (1-based epochs, slope per epoch over the last
    IMPROVING_SLOPE_EPOCHS) when the curve was still improving at its last epoch, else None.
    A curve of fewer than 2 epochs, or with a missing value, is never called improving."""
    vals = [float(x) for x in values if _finite(x)]
    n = len(vals)
    if n < 2 or n != len(values):
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(range(n), key=lambda i: (sign * vals[i], i))  # the latest of equal bests
    tail = max(1, math.ceil(n * IMPROVING_TAIL))
    k = min(n, IMPROVING_SLOPE_EPOCHS)
    xs, ys = list(range(n - k, n)), vals[n - k:]
    mx, my = sum(xs) / k, sum(ys) / k
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    if best >= n - tail and sign * slope > 0:
        return {"best_epoch": best + 1, "epochs": n, "slope": slope}
    return None


def improving_curves(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which of a run's validation curves ('val_acc', 'val_loss') were still improving at its
    last epoch, from its per-epoch records."""
    out = []
    for key, higher in CURVES:
        vals = [r.get(key) for r in history]
        if vals and still_improving(vals, higher):
            out.append(key)
    return out


def judgeable(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the rule can judge a run: 2+ epochs with every validation value recorded."""
    return len(history) >= 2 and all(_finite(r.get(k)) for r in history for k, _ in CURVES)


def convergence(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """A study's runs judged by the rule: {'converged': False when any run was still
    improving, True when every run could be judged and none was, None when some run could not
    be judged (one epoch, a missing value) and none was seen improving; 'still_improving': the
    names of those that were; 'runs_checked'; 'rule'}."""
    hits = [name for name, h in histories.items() if improving_curves(h)]
    judged = bool(histories) and all(judgeable(h) for h in histories.values())
    return {"converged": False if hits else (True if judged else None),
            "still_improving": hits, "runs_checked": len(histories), "rule": RULE}
