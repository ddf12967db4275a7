"""Shared figure style, so every PNG in a run looks like part of one report.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot, no backend switch), styled
through a local rc context: importing or plotting with cifarlens never changes the user's
matplotlib state (backend, rcParams, open pyplot figures).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cifarlens._mpl import matplotlib  # first: matplotlib imported whatever MPLBACKEND says
from cifarlens._text import plain_text

Figure = matplotlib.figure.Figure

DPI = 150
# The one colour pair for the two arms in every figure and in the report (Okabe-Ito blue and
# orange: told apart with the common colour-vision deficiencies, and never the right/wrong green
# and red). Train vs validation is told by line style, not colour.
ARM_COLORS = {"baseline": "#0072b2", "variant": "#e69f00"}
COLORS = {**ARM_COLORS, "train": "#1f77b4", "val": "#ff7f0e",
          "right": "#2ca02c", "wrong": "#d62728", "neutral": "#7f7f7f"}
# Line style per curve kind when arms are told by colour.
CURVE_STYLES = {"train": "--", "val": "-"}
# Series that are not an arm (a single run's "uncalibrated" / "temperature-scaled", a third
# model): the baseline colour first, then colours that are neither arm's nor right/wrong.
OTHER_SERIES = ["#0072b2", "#cc79a7", "#009e73", "#56b4e9", "#7f7f7f"]


def arm_color(name: object, k: int = 0) -> str:
    """The colour of a series: ARM_COLORS' when its name is (or starts with) 'baseline' or
    'variant', else the k-th of OTHER_SERIES."""
    label = str(name or "").strip().lower()
    for arm, color in ARM_COLORS.items():
        if label == arm or label.startswith(arm + " ") or label.startswith(arm + "-"):
            return color
    return OTHER_SERIES[k % len(OTHER_SERIES)]


def arm_cmap(name: str = "arms") -> Any:
    """A diverging colormap from the baseline's colour through white to the variant's: for
    'variant minus baseline' maps, each cell takes the colour of the arm that has more."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        name, [ARM_COLORS["baseline"], "#ffffff", ARM_COLORS["variant"]])

# Applied while a figure is built and while it is drawn (tick labels are made at draw time).
# Not text.parse_math=False: that breaks matplotlib's own log-scale tick labels; data text is
# made mathtext-free by `safe_text` instead.
STYLE = {
    "figure.dpi": 100, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 10,
    "axes.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "image.cmap": "viridis",
    "text.usetex": False,
}

# Photos are 32x32: every figure draws them with their own pixels (integer upscale), never
# smoothed into detail they do not have (the failure gallery once used bicubic).
IMAGE_INTERPOLATION = "nearest"

# Longest label drawn from data (class names are data: a 3,000-character name once made a
# 49,869 px wide PNG). Longer ones are cut with an ellipsis.
MAX_LABEL = 40


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The cifarlens style for the duration only; the caller's rcParams come back after."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(*args: Any, figsize: tuple[float, float] | None = None,
               constrained_layout: bool = True, **kwargs: Any) -> tuple[Figure, Any]:
    """A styled Figure and its axes, like `plt.subplots` but outside pyplot."""
    with style():
        fig = Figure(figsize=figsize, layout="constrained" if constrained_layout else None)
        axes = fig.subplots(*args, **kwargs)
    return fig, axes


def safe_text(s: object, max_len: int = MAX_LABEL) -> str:
    """A data label as plain drawable text (`_text.plain_text`: escape sequences, control and
    format characters gone, whitespace collapsed, at most `max_len` chars), `$` escaped so it
    is never mathtext."""
    return plain_text(s, max_len, collapse=True).replace("$", r"\$")
