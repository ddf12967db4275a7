"""One colour pair for baseline and variant in every figure (figures.ARM_COLORS)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_hex

from cifarlens.analysis.metrics import calibration_bins
from cifarlens.figures.plots import (
    plot_confidence_hist,
    plot_confusion_difference,
    plot_curves,
    plot_per_class_changes,
    plot_reliability,
)
from cifarlens.figures.style import ARM_COLORS, arm_color

BASE, VAR = ARM_COLORS["baseline"], ARM_COLORS["variant"]


@pytest.fixture
def drawn(monkeypatch) -> list[Any]:
    """The figures the plotting functions hand to save_figure (nothing is written)."""
    figs: list[Any] = []
    import cifarlens.figures.plots as P

    monkeypatch.setattr(P, "save_figure", lambda fig, path, **kw: figs.append(fig))
    return figs


def _hist(n: int, shift: float) -> list[dict[str, float]]:
    return [{"epoch": e, "train_loss": 3 - e * 0.1 - shift, "val_loss": 3.1 - e * 0.1,
             "train_acc": 0.1 * e + shift, "val_acc": 0.1 * e} for e in range(1, n + 1)]


def test_the_pair_is_two_distinct_colours_apart_from_right_and_wrong():
    from cifarlens.figures.style import COLORS

    assert BASE != VAR and {BASE, VAR}.isdisjoint({COLORS["right"], COLORS["wrong"]})
    assert arm_color("baseline") == BASE and arm_color("variant (ECE 3.10%)") == VAR
    assert arm_color("temperature-scaled", 1) not in (VAR,)


def test_curves_colour_each_arm_and_style_train_vs_val(drawn, tmp_path):
    plot_curves({"baseline": _hist(5, 0.0), "variant": _hist(5, 0.05)}, tmp_path / "c.png")
    (fig,) = drawn
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        for arm in ("baseline", "variant"):
            for kind, ls in (("train", "--"), ("val", "-")):
                ln = lines[f"{arm} {kind}"]
                assert to_hex(ln.get_color()) == ARM_COLORS[arm]
                assert ln.get_linestyle() == ls


def test_reliability_series_take_their_arm_colour(drawn, tmp_path):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 500)
    corr = rng.uniform(size=500) < conf
    bins = calibration_bins(conf, corr)
    plot_reliability([("baseline", bins, 0.05), ("variant", bins, 0.04)], tmp_path / "r.png")
    (fig,) = drawn
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_label() == "baseline (ECE 5.00%)"] or [
        p for p in ax.containers[0]]
    assert to_hex(bars[0].get_facecolor()) == BASE
    (vline,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("variant")]
    assert to_hex(vline.get_color()) == VAR
    # the share histogram below: one colour per arm, the same pair
    colours = {to_hex(p.get_facecolor()) for p in fig.axes[1].patches}
    assert colours == {BASE, VAR}


def test_confidence_hist_uses_the_arm_colour(drawn, tmp_path):
    conf = np.linspace(0.1, 1.0, 50)
    plot_confidence_hist(conf, conf > 0.5, tmp_path / "h.png", arm="variant")
    (fig,) = drawn
    colours = {to_hex(p.get_edgecolor()) for p in fig.axes[0].patches}
    assert colours == {VAR}


def test_per_class_and_confusion_difference_use_the_pair(drawn, tmp_path):
    a = np.diag([8, 5, 6]) + np.array([[0, 1, 1], [2, 0, 3], [1, 1, 0]])
    b = np.diag([9, 3, 6]) + np.array([[0, 1, 0], [3, 0, 4], [1, 1, 0]])
    plot_per_class_changes(a, b, ["x", "y", "z"], tmp_path / "p.png", k=1)
    fig = drawn[-1]
    heights = {to_hex(p.get_facecolor()): p.get_height() for p in fig.axes[0].patches
               if p.get_height() != 0}
    assert heights[VAR] > 0 and heights[BASE] < 0  # class x improved, class y worsened
    plot_confusion_difference(a, b, ["x", "y", "z"], tmp_path / "d.png")
    im = drawn[-1].axes[0].get_images()[0]
    cmap = im.get_cmap()
    assert to_hex(cmap(0.0)) == BASE and to_hex(cmap(1.0)) == VAR
