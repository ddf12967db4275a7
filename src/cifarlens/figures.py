"""Shared figure style, so every PNG in a run looks like part of one report."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

DPI = 150
COLORS = {"baseline": "#1f77b4", "variant": "#d62728", "train": "#1f77b4", "val": "#ff7f0e",
          "right": "#2ca02c", "wrong": "#d62728", "neutral": "#7f7f7f"}


def style() -> None:
    plt.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 10,
        "axes.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
        "axes.spines.right": False, "legend.frameon": False, "image.cmap": "viridis",
        # Class names and paths are data, never markup: no mathtext anywhere in our figures.
        "text.parse_math": False, "text.usetex": False,
    })


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    style()
    kwargs.setdefault("constrained_layout", True)
    return plt.subplots(*args, **kwargs)


def safe_text(s: object) -> str:
    """A label as plain text: no control characters (mathtext is off in `style()`)."""
    return "".join(ch for ch in str(s) if ch.isprintable())
