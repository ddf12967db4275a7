"""Redrawing the study's figures as SVG or PDF (`cifarlens report --figure-format`)."""


from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cifarlens._io import read_json
from cifarlens.errors import CifarlensError
from cifarlens.figures import plots
from cifarlens.report.convergence import _histories
from cifarlens.report.formats import _d
from cifarlens.runs import Run
from cifarlens.study.folder import StudyFolder

# --------------------------------------------------------------------------- figure export

EXPORT_DIR = StudyFolder.FIGURES  # STUDY/figures/<fmt>/


def _run_dir(study_dir: Path, model: dict[str, Any]) -> Path | None:
    """A model's run folder inside the study (summary.json may hold the path it had when the
    study ran elsewhere: only its name is used)."""
    run = model.get("run")
    if not isinstance(run, str) or not run:
        return None
    d = StudyFolder(study_dir).run_by_name(run).resolve()
    return d if d.is_dir() and d.is_relative_to(study_dir.resolve()) else None


def export_figures(study_dir: Path, fmt: str) -> tuple[list[Path], list[str]]:
    """Redraw the study's figures that its saved data allows (curves, confusion, confusion
    difference, per-class changes, reliability) as `fmt` ('svg' or 'pdf') into
    STUDY/figures/<fmt>/; return (written files, keys not redrawn, with why). The Grad-CAM and
    gallery figures need the models and images, so they stay PNG."""
    from cifarlens._io import figure_formats
    from cifarlens.data.cifar_names import (
        CIFAR10_NAMES,
        CIFAR100_COARSE_NAMES,
        CIFAR100_FINE_NAMES,
        FINE_TO_COARSE,
    )
    from cifarlens.figures.plots import plot_curves

    study_dir = Path(study_dir)
    summary = read_json(study_dir / StudyFolder.SUMMARY)
    if not isinstance(summary, dict):
        raise CifarlensError(f"{study_dir / 'summary.json'} must hold a JSON object")
    models = _d(summary.get("models"))
    ra, rb = (_run_dir(study_dir, _d(models.get(k))) for k in ("baseline", "variant"))
    if ra is None or rb is None:
        raise CifarlensError(f"{study_dir}: the baseline and variant run folders are not in "
                             "the study's runs/ folder, so no figure can be redrawn")
    out = study_dir / EXPORT_DIR / fmt
    ds = summary.get("dataset")
    names = (CIFAR100_FINE_NAMES if ds == "cifar100" else CIFAR10_NAMES if ds == "cifar10"
             else None)
    groups = dict(group_names=CIFAR100_COARSE_NAMES, group_of=FINE_TO_COARSE) \
        if ds == "cifar100" else {}
    done: list[Path] = []
    skipped = [f"{k} (drawn from data the report does not reload)" for k in
               ("failure_gallery", "gradcam_failures", "gradcam_tracking", "deletion_insertion",
                "confusion_superclass") if k in _d(summary.get("figures"))]

    def target(key: str) -> Path:
        return out / f"{key}.png"  # save_figure swaps the suffix for the format

    from tqdm import tqdm

    bar = tqdm(total=5, desc=f"figures as {fmt}", unit="fig", file=sys.stderr,
               disable=not sys.stderr.isatty())
    with figure_formats((fmt,)), bar:
        hists = _histories(study_dir)
        hist = {arm: hists[run.name] for arm, run in (("baseline", ra), ("variant", rb))
                if run.name in hists}
        if len(hist) == 2:
            plot_curves(hist, target("curves"))
            done.append(target("curves"))
        else:
            skipped.append(f"curves (no {Run.HISTORY})")
        bar.update()
        try:
            ma, mb = Run(ra).metrics("test"), Run(rb).metrics("test")
            cm_a = ma["confusion_matrix"]
            cm_b = mb["confusion_matrix"]
        except (CifarlensError, KeyError, TypeError):
            skipped.append("confusion, confusion_difference, per_class_changes, reliability "
                           "(no test metrics)")
        else:
            if names is not None and len(names) != len(cm_a):
                names, groups = None, {}
            plots.plot_confusion(cm_a, names, target("confusion"), **groups)
            bar.update()
            plots.plot_confusion_difference(cm_a, cm_b, names, target("confusion_difference"),
                                        **groups)
            bar.update()
            plots.plot_per_class_changes(cm_a, cm_b, names, target("per_class_changes"))
            bar.update()
            done += [target(k) for k in ("confusion", "confusion_difference",
                                         "per_class_changes")]
            series = [(arm, m["calibration"], m.get("ece")) for arm, m in
                      (("baseline", ma), ("variant", mb)) if isinstance(m.get("calibration"),
                                                                        dict)]
            if len(series) == 2:
                plots.plot_reliability(series, target("reliability"), title="Reliability on test")
                done.append(target("reliability"))
            else:
                skipped.append("reliability (no calibration bins)")
            bar.update()
    return [p.with_suffix("." + fmt) for p in done], skipped


