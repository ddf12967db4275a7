"""Whether the runs had stopped improving when training ended."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cifarlens.report.formats import (
    clean_text,
    num,
)
from cifarlens.report.view import View
from cifarlens.runs import Run
from cifarlens.study.folder import StudyFolder

# "Still improving": the best epoch lies within the last 10% of epochs (at least the last
# one) AND the least-squares slope over the last 5 epochs points the improving way.
IMPROVING_TAIL = 0.10
IMPROVING_SLOPE_EPOCHS = 5
MAX_HISTORY_BYTES = 5 * 1024 * 1024


def still_improving(values: list[float], higher_is_better: bool = True) -> dict[str, Any] | None:
    """{'best_epoch', 'epochs', 'slope'} (1-based epochs, slope per epoch over the last
    IMPROVING_SLOPE_EPOCHS) when the curve was still improving at its last epoch, else None.
    A curve of fewer than 2 epochs is never called improving (no slope)."""
    vals = [float(x) for x in values if num(x) is not None]
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


def _histories(study_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """run name -> its per-epoch records, from STUDY/runs/*/metrics.jsonl (bad lines skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    root = study_dir / StudyFolder.RUNS
    if not root.is_dir():
        return out
    for path in sorted(root.glob(f"*/{Run.HISTORY}")):
        try:
            if path.stat().st_size > MAX_HISTORY_BYTES:
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        recs = []
        for ln in lines:
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if isinstance(r, dict) and "epoch" in r:
                recs.append(r)
        if recs:
            out[path.parent.name] = recs
    return out


def describe_still_improving(hists: dict[str, list[dict[str, Any]]]) -> str:
    """A warning naming the runs whose validation accuracy or loss was still improving at
    their last epoch (see still_improving), or '' when none was."""
    hits: dict[str, list[str]] = {}
    for name, recs in hists.items():
        for key, label, higher in (("val_acc", "validation accuracy still rising", True),
                                   ("val_loss", "validation loss still falling", False)):
            vals = [r.get(key) for r in recs]
            if vals and all(num(x) is not None for x in vals) and still_improving(vals, higher):
                hits.setdefault(label, []).append(clean_text(name))
    if not hits:
        return ""
    n = len(hists)
    parts = [f"{label} in {len(names)} of {n} run{'' if n == 1 else 's'} ({', '.join(names)})"
             for label, names in hits.items()]
    return ("Not converged: " + "; ".join(parts) + f" (best epoch within the last "
            f"{IMPROVING_TAIL:.0%} of epochs and a last-{IMPROVING_SLOPE_EPOCHS}-epoch slope "
            "still improving). More epochs could change both accuracies and their difference.")


def curve_warnings(v: View) -> list[str]:
    w = describe_still_improving(_histories(v.study_dir))
    return [w] if w else []
