"""Whether the runs had stopped improving when training ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cifarlens.analysis.convergence import (
    IMPROVING_SLOPE_EPOCHS,
    IMPROVING_TAIL,
    still_improving,
)
from cifarlens.report.formats import (
    clean_text,
    num,
)
from cifarlens.report.view import View
from cifarlens.runs import Run
from cifarlens.study.folder import StudyFolder

MAX_HISTORY_BYTES = 5 * 1024 * 1024


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
