"""The robustness figure: accuracy against corruption severity, one panel per family.

The numbers come from analysis/robustness.py records; this module only draws them, in the one
cifarlens style (figures/style.py), written atomically (style.save_figure).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cifarlens.analysis.corruptions import ALL, FAMILIES
from cifarlens.errors import CifarlensError
from cifarlens.figures.style import arm_color, new_figure, safe_text, save_figure, style


def family_curves(rec: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """Per family: severities (0 = clean) and the mean accuracy over the family's main
    corruptions at each, as fractions."""
    sevs = [int(s) for s in rec["severities"]]
    out = {}
    for fam in FAMILIES:
        names = [n for n in rec["corruptions"] if ALL[n].family == fam]
        if names:
            means = [float(np.mean([rec["corruptions"][n][str(s)] for n in names])) for s in sevs]
            out[fam] = ([0, *sevs], [rec["clean"], *means])
    return out


def plot_robustness(records: dict[str, dict[str, Any]], path: str | os.PathLike) -> None:
    """Accuracy (%) against severity, one panel per corruption family: a bold line per record
    (a run, or an arm; arm colours) for the family's mean, a thin one per corruption, dashed
    for the held-out four. Severity 0 is the clean accuracy. The records' source (computed
    locally or read from files) is the figure's subtitle."""
    if not records:
        raise CifarlensError("no robustness record to draw")
    fig, axes = new_figure(1, len(FAMILIES), figsize=(3.0 * len(FAMILIES), 3.2), sharey=True)
    for k, (label, rec) in enumerate(records.items()):
        color = arm_color(label, k)
        curves = family_curves(rec)
        sevs = [0, *[int(s) for s in rec["severities"]]]
        for ax, fam in zip(axes, FAMILIES, strict=True):
            for table, ls in ((rec["corruptions"], "-"), (rec.get("held_out", {}), "--")):
                for n, accs in table.items():
                    if ALL[n].family == fam:
                        ys = [rec["clean"], *[accs[str(s)] for s in sevs[1:]]]
                        ax.plot(sevs, 100 * np.asarray(ys), ls, color=color, lw=0.7,
                                alpha=0.35)
            if fam in curves:
                xs, ys = curves[fam]
                ax.plot(xs, 100 * np.asarray(ys), "-o", color=color, lw=2, ms=3,
                        label=safe_text(label))
    run_families = {ALL[n].family for r in records.values()
                    for n in [*r["corruptions"], *r.get("held_out", {})]}
    for ax, fam in zip(axes, FAMILIES, strict=True):
        ax.set(title=fam, xlabel="severity (0 = clean)", xticks=range(0, 6))
        if fam not in run_families:
            ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center",
                    color="0.5")
    axes[0].set_ylabel("accuracy (%)")
    labelled: dict[str, Any] = {}  # label -> line, once per record
    for ax in axes:
        for line, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(lab, line)
    with style():  # the legend is made here, outside new_figure's style scope
        fig.legend(list(labelled.values()), list(labelled), loc="outside lower center",
                   ncol=max(1, len(labelled)), fontsize=8,
                   title="family mean (thin lines: each corruption; dashed: held out)",
                   title_fontsize=7)
    sources = sorted({str(r.get("source", "")) for r in records.values()})
    n = sorted({int(r.get("n_images", 0)) for r in records.values()})
    fig.suptitle(safe_text(f"Accuracy under common corruptions ({', '.join(map(str, n))} test "
                           f"images): {'; '.join(sources)}", max_len=200), fontsize=9)
    save_figure(fig, path)
