"""Grad-CAM figures and the one overlay style they share.

Every map is drawn with one colormap (`CAM_CMAP`, inferno: perceptually uniform, and dark for
"no evidence"), resized with one interpolation (`CAM_INTERPOLATION`, bilinear, as `gradcam`
upsamples its maps) and explained by a colour bar; `overlay` is the same blend as an RGB array
for notebooks (like pytorch-grad-cam's `show_cam_on_image`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from cifarlens._text import plain_text
from cifarlens.cam.gradcam import INTERPOLATION, resize_maps
from cifarlens.cam.quality import _as_maps
from cifarlens.errors import CifarlensError
from cifarlens.figures.style import COLORS, IMAGE_INTERPOLATION, new_figure, safe_text, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CAM_CMAP", "CAM_INTERPOLATION", "IMAGE_INTERPOLATION", "overlay",
           "model_scale",
           "plot_deletion_insertion", "plot_explanations", "plot_tracking"]

# The one Grad-CAM style (issue 12 found inferno/nearest in one figure, jet/bicubic without a
# colour bar in the other). inferno: perceptually uniform, readable in grey, and black for 0.
CAM_CMAP = "inferno"
# How a map gets from its grid to the drawn pixels: the method's own upsampling (cam/gradcam.py),
# used for the arrays and named to imshow for the last display resampling.
CAM_INTERPOLATION = INTERPOLATION
# Photos keep their own pixels (figures.IMAGE_INTERPOLATION, re-exported here).


def _as_rgb01(image: np.ndarray | Tensor) -> np.ndarray:
    """An (H, W, 3) image as float64 in [0, 1]: uint8 is divided by 255, floats must be in
    [0, 1] already (as pytorch-grad-cam's show_cam_on_image asks)."""
    img = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise CifarlensError(f"image must be (H, W, 3) RGB, got shape {img.shape} "
                             "(a (3, H, W) tensor needs .permute(1, 2, 0))")
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if not np.issubdtype(img.dtype, np.floating):
        raise CifarlensError(f"image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
        raise CifarlensError("a float image must lie in [0, 1] (a normalized tensor must be "
                             "un-normalized first)")
    return img.astype(np.float64)


def overlay(image: np.ndarray | Tensor, cam: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
    """The map drawn over the image: (H, W, 3) uint8 RGB, for `plt.imshow` or saving.

    `image`: (H, W, 3), uint8 or float in [0, 1]. `cam`: (h, w) in [0, 1] at any size (divide a
    raw Grad-CAM by its maximum first), resized to (H, W) bilinearly like every cifarlens figure.
    Each pixel is (1 - alpha) * image + alpha * CAM_CMAP(cam), rounded: the blend the figures
    show, like pytorch-grad-cam's show_cam_on_image (its image_weight is 1 - alpha).
    """
    import matplotlib

    img = _as_rgb01(image)
    m = cam.detach().cpu().double().numpy() if isinstance(cam, Tensor) else np.asarray(
        cam, dtype=np.float64)
    if m.ndim != 2:
        raise CifarlensError(f"cam must be one (H, W) map, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise CifarlensError("cam contains NaN or inf")
    if m.size and (m.min() < 0 or m.max() > 1 + 1e-6):
        raise CifarlensError(f"cam must lie in [0, 1], got [{m.min():.3g}, {m.max():.3g}]; "
                             "divide a raw Grad-CAM by its maximum (cam / cam.max())")
    if not 0 <= alpha <= 1:
        raise CifarlensError(f"alpha must be in [0, 1], got {alpha}")
    h, w = img.shape[:2]
    if m.shape != (h, w):
        m = resize_maps(m, (h, w)).double().numpy()
    heat = matplotlib.colormaps[CAM_CMAP](np.clip(m, 0, 1))[..., :3]
    out = (1 - alpha) * img + alpha * heat
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _plain(s: object, max_len: int = 40) -> str:
    """Label text safe to draw (drawn with parse_math=False, so `$` stays `$`)."""
    return plain_text(s, max_len, collapse=True)


_TEXT = {"parse_math": False, "usetex": False}  # label names are data, never markup


def plot_explanations(
    images_uint8: np.ndarray,
    maps_pred: Tensor | np.ndarray,
    maps_true: Tensor | np.ndarray,
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    pred_names: Sequence[str],
    true_names: Sequence[str],
    confidences: Sequence[float] | np.ndarray,
) -> None:
    """One row per image: image | CAM(pred) | overlay | CAM(true) | overlay, saved as PNG.

    For display only, both maps of a row are divided by the larger of their two maxima, so the
    predicted- and true-class evidence of one image are on one scale (rows are not comparable).
    """
    imgs = np.asarray(images_uint8)
    mp, mt = _as_maps(maps_pred), _as_maps(maps_true)
    n = len(imgs)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise CifarlensError(f"images_uint8 must be (N, H, W, 3), got {imgs.shape}")
    for name, seq in (("maps_pred", mp), ("maps_true", mt), ("titles", titles),
                      ("pred_names", pred_names), ("true_names", true_names),
                      ("confidences", confidences)):
        if len(seq) != n:
            raise CifarlensError(f"{name} has {len(seq)} entries for {n} images")
    if n == 0:
        raise CifarlensError("no images to plot")
    h, w = imgs.shape[1:3]
    if mp.shape[1:] != (h, w) or mt.shape[1:] != (h, w):
        raise CifarlensError("maps must have the images' height and width")

    scale = _display_scale(h, w)
    size = (h * scale, w * scale)
    fig, axes = new_figure(n, 5, figsize=(5 * 1.55, n * 1.75 + 0.5), squeeze=False)
    for i in range(n):
        img = _upscale(imgs[i], scale)
        vmax = float(max(mp[i].max(), mt[i].max()))
        norm = vmax if vmax > 0 else 1.0
        pred, true = _plain(pred_names[i]), _plain(true_names[i])
        row = axes[i]
        row[0].imshow(img, interpolation=IMAGE_INTERPOLATION)
        row[0].set_title(f"{_plain(titles[i], 60)}\n{pred} ({float(confidences[i]):.0%})",
                         fontsize=7, **_TEXT)
        for j, (m, head) in enumerate(((mp[i], f"why it said {pred}"),
                                       (mt[i], f"evidence for {true}"))):
            big = np.clip(resize_maps(m / norm, size).double().numpy(), 0, 1)
            row[1 + 2 * j].imshow(big, cmap=CAM_CMAP, vmin=0, vmax=1,
                                  interpolation=CAM_INTERPOLATION)
            row[1 + 2 * j].set_title(head, fontsize=7, **_TEXT)
            row[2 + 2 * j].imshow(overlay(img, big), interpolation=IMAGE_INTERPOLATION)
            # an all-black map is a finding (no evidence for that class), not a broken image
            row[2 + 2 * j].set_title("overlay" + ("\n(black = no evidence)" if m.max() <= 0
                                                  else ""), fontsize=7, **_TEXT)
        for ax in row:
            ax.set_axis_off()
    _colorbar(fig, axes, "Grad-CAM / max of the row's two maps (pred and true share one scale)")
    save_figure(fig, path)


def _display_scale(h: int, w: int) -> int:
    """Integer upscale of a photo to about 128 px: crisp pixels at the figures' size."""
    return max(1, round(128 / max(h, w)))


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img.repeat(scale, 0).repeat(scale, 1)


def _colorbar(fig: Figure, axes: np.ndarray, label: str) -> None:
    """The one colour bar of a map figure: CAM_CMAP over [0, 1], beside all its panels."""
    import matplotlib

    n = axes.shape[0]
    sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=CAM_CMAP)
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=min(1.0, 3 / n) if n > 3 else 0.9,
                      pad=0.01)
    cb.set_label(label, fontsize=7)


def plot_deletion_insertion(
    result: dict[str, np.ndarray],
    path: str | os.PathLike,
    *,
    random_result: dict[str, np.ndarray] | None = None,
    baselines: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:
    """Mean deletion and insertion curves (+- 1 standard error), mean AUCs in the legend.

    `baselines`: further maps to draw, by label (e.g. the smooth random map, the centre prior).
    """
    import matplotlib

    fig, axes = new_figure(1, 2, figsize=(8, 3.4))
    runs = [("Grad-CAM", result, COLORS["variant"])]
    if random_result is not None:
        runs.append(("i.i.d. random pixels", random_result, COLORS["neutral"]))
    extra = matplotlib.colormaps["tab10"]
    for j, (label, res) in enumerate((baselines or {}).items()):
        runs.append((_plain(label), res, extra((2, 4, 8)[j % 3])))  # not red or grey
    for ax, kind, better in ((axes[0], "deletion", "lower AUC is better"),
                             (axes[1], "insertion", "higher AUC is better")):
        for label, res, color in runs:
            f = np.asarray(res["fractions"])
            y = np.asarray(res[kind])
            if y.ndim != 2 or y.shape[1] != len(f):
                raise CifarlensError(f"{kind} curves must be (N, {len(f)}), got {y.shape}")
            mean = y.mean(axis=0)
            se = y.std(axis=0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
            auc = float(np.mean(res[f"{kind}_auc"]))
            ax.plot(f, mean, color=color, label=f"{label} (AUC {auc:.3f}, n={len(y)})")
            ax.fill_between(f, mean - se, mean + se, color=color, alpha=0.2, linewidth=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        ax.set_ylabel("target-class probability")
        ax.set_title(f"{kind} ({better})")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def model_scale(maps) -> float:
    """One model's colour scale: the 99th percentile of its map values over the shown images.

    Raw Grad-CAM magnitudes depend on each network's logits and activations, so two models'
    maps are never put on one scale; within a model, images stay comparable (one scale for all
    of them), and a single hot pixel cannot wash the rest out."""
    a = np.asarray(maps, dtype=np.float64)
    v = float(np.percentile(a, 99)) if a.size else 0.0
    return v if v > 0 else max(float(a.max()) if a.size else 0.0, 1e-12)


def plot_tracking(images: np.ndarray, maps_a, maps_b, rows: list[dict], path: Path) -> None:
    """Per failure: image, baseline Grad-CAM (its prediction), variant Grad-CAM (its prediction).

    Each model's maps are divided by that model's own scale (`model_scale`: 99th percentile over
    these images) and clipped at 1: rows of one model compare, the two models' strengths do not.
    Drawn like every map figure: `overlay` (CAM_CMAP, bilinear) and a colour bar."""
    n = len(rows)
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise CifarlensError(f"images must be (N, H, W, 3), got {imgs.shape}")
    if n == 0 or not len(imgs) == len(maps_a) == len(maps_b) == n:
        raise CifarlensError(f"need one image and two maps per row: {len(imgs)} images, "
                             f"{len(maps_a)} and {len(maps_b)} maps, {n} rows")
    va, vb = model_scale(maps_a), model_scale(maps_b)
    scale = _display_scale(*imgs.shape[1:3])
    size = (imgs.shape[1] * scale, imgs.shape[2] * scale)
    fig, axes = new_figure(n, 3, figsize=(6.6, 2.2 * n + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        img = _upscale(imgs[r], scale)
        a, b = (np.clip(resize_maps(np.asarray(m[r], dtype=np.float64) / v, size).double()
                        .numpy(), 0, 1) for m, v in ((maps_a, va), (maps_b, vb)))
        axes[r, 0].imshow(img, interpolation=IMAGE_INTERPOLATION)
        flag = " [label?]" if row["label_error_suspect"] else ""
        axes[r, 0].set_title(f"#{row['rank']} true: {safe_text(row['true_name'])}{flag}",
                             fontsize=7, color="#b00020" if flag else "black")
        axes[r, 1].imshow(overlay(img, a), interpolation=IMAGE_INTERPOLATION)
        axes[r, 1].set_title(f"baseline: {safe_text(row['pred_name'])} "
                             f"({100 * row['confidence']:.0f}%)", fontsize=7)
        v = row["variant"]
        axes[r, 2].imshow(overlay(img, b), interpolation=IMAGE_INTERPOLATION)
        axes[r, 2].set_title(f"variant: {safe_text(v['pred_name'])} ({100 * v['confidence']:.0f}%)"
                             f" [{v['status'].replace('_', ' ')}]", fontsize=7,
                             color={"fixed": "#1a7f37"}.get(v["status"], "#b00020"))
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    fig.suptitle("Baseline failures tracked in the variant (Grad-CAM of each model's prediction;"
                 "\neach model scaled to its own 99th percentile: strengths do not compare "
                 "across models)", fontsize=8)
    _colorbar(fig, axes, "Grad-CAM / that model's 99th percentile over these images (clipped at 1)")
    save_figure(fig, path)
