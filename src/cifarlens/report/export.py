"""Redrawing the study's figures as SVG or PDF (`cifarlens report --figure-format`)."""


from __future__ import annotations

import sys
from pathlib import Path

from cifarlens.data.cifar_names import (
    CIFAR10_NAMES,
    CIFAR100_COARSE_NAMES,
    CIFAR100_FINE_NAMES,
    FINE_TO_COARSE,
)
from cifarlens.errors import CifarlensError
from cifarlens.figures import plots
from cifarlens.figures.plots import plot_curves
from cifarlens.figures.style import figure_formats
from cifarlens.report.convergence import _histories
from cifarlens.runs import Run
from cifarlens.study.folder import StudyFolder
from cifarlens.study.schema import Model, read_summary

# --------------------------------------------------------------------------- figure export

EXPORT_DIR = StudyFolder.FIGURES  # STUDY/figures/<fmt>/


def _run_dir(study_dir: Path, model: Model) -> Path | None:
    """A model's run folder inside the study (summary.json may hold the path it had when the
    study ran elsewhere: only its name is used)."""
    run = model.run
    if not run:
        return None
    d = StudyFolder(study_dir).run_by_name(run).resolve()
    return d if d.is_dir() and d.is_relative_to(study_dir.resolve()) else None


def export_figures(study_dir: Path, fmt: str) -> tuple[list[Path], list[str]]:
    """Redraw the study's figures that its saved data allows (curves, confusion, confusion
    difference, per-class changes, reliability) as `fmt` ('svg' or 'pdf') into
    STUDY/figures/<fmt>/; return (written files, keys not redrawn, with why). The Grad-CAM and
    gallery figures need the models and images, so they stay PNG."""
    study_dir = Path(study_dir)
    summary = read_summary(study_dir / StudyFolder.SUMMARY)
    ra, rb = (_run_dir(study_dir, m) for m in (summary.baseline, summary.main.model))
    if ra is None or rb is None:
        raise CifarlensError(f"{study_dir}: the baseline and variant run folders are not in "
                             "the study's runs/ folder, so no figure can be redrawn")
    out = study_dir / EXPORT_DIR / fmt
    ds = summary.dataset
    names = (CIFAR100_FINE_NAMES if ds == "cifar100" else CIFAR10_NAMES if ds == "cifar10"
             else None)
    groups = plots.ClassGroups(FINE_TO_COARSE, CIFAR100_COARSE_NAMES) if ds == "cifar100" \
        else None
    done: list[Path] = []
    skipped = [f"{k} (drawn from data the report does not reload)" for k in
               ("failure_gallery", "gradcam_failures", "gradcam_tracking", "deletion_insertion",
                "confusion_superclass") if k in {**summary.figures, **summary.main.figures}]

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
                names, groups = None, None
            plots.plot_confusion(cm_a, names, target("confusion"), groups=groups)
            bar.update()
            plots.plot_confusion_difference(cm_a, cm_b, names, target("confusion_difference"),
                                            groups=groups)
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


