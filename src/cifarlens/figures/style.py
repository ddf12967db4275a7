"""Shared figure style, so every PNG in a run looks like part of one report.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot, no backend switch), styled
through a local rc context: importing or plotting with cifarlens never changes the user's
matplotlib state (backend, rcParams, open pyplot figures).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cifarlens._io import write_bytes
from cifarlens._mpl import matplotlib  # first: matplotlib imported whatever MPLBACKEND says
from cifarlens._text import plain_text
from cifarlens.errors import CifarlensError

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


# The formats save_figure writes, set for a scope by `figure_formats` (e.g. `cifarlens report
# --figure-format svg` redraws the study's figures as SVG only); PNG everywhere else.
_FIGURE_FORMATS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "cifarlens_figure_formats", default=("png",))
FIGURE_FORMATS = ("png", "svg", "pdf")


@contextlib.contextmanager
def figure_formats(formats: tuple[str, ...]) -> Iterator[None]:
    """Within this scope save_figure(fig, "x.png") writes x.<fmt> for each of `formats`."""
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise CifarlensError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}")
    token = _FIGURE_FORMATS.set(tuple(formats))
    try:
        yield
    finally:
        _FIGURE_FORMATS.reset(token)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically as PNG (drawn in the cifarlens style), or in the
    formats a `figure_formats` scope asks for (same name, their suffix)."""
    # A constrained layout already fits every artist into the canvas; "tight" would draw the
    # whole figure a second time to measure it (a third of a 100-class confusion figure's cost).
    tight = None if fig.get_layout_engine() is not None else "tight"
    for fmt in _FIGURE_FORMATS.get():
        buf = io.BytesIO()
        with style():
            # fixed metadata: the same figure gives the same bytes
            meta = {"Date": None} if fmt in ("svg", "pdf") else None
            # PNG at zlib level 3, not Pillow's 6: half the encode time of a large figure
            # (0.12 s vs 0.24 s for a 1162x3225 Grad-CAM grid) for ~17% more bytes on disk; the
            # report re-encodes what it embeds anyway (report.compact_image)
            extra = {"pil_kwargs": {"compress_level": 3}} if fmt == "png" else {}
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches=tight, metadata=meta, **extra)
        write_bytes(Path(path).with_suffix("." + fmt) if fmt != "png" else path,
                    buf.getvalue())
