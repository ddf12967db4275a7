"""How good is a Grad-CAM map: faithfulness (deletion/insertion against three input-independent
baselines and another image's map of the same class, with paired bootstrap CIs), localisation (the pointing game) and the share of map mass
near the image border (failures vs correct predictions, permutation test).

Named after pytorch-grad-cam's `metrics/` package rather than `faithfulness.py`: faithfulness
is one of the three kinds of measure here, beside localisation and border share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifarlens.analysis import stats as S
from cifarlens.cam.gradcam import (
    TargetsLike,
    _as_images,
    _as_targets,
    _check_targets_range,
    _device_of,
    _eval_mode,
)
from cifarlens.errors import CifarlensError

__all__ = ["BASELINE_NAMES", "BORDER", "DEFAULT_BORDER", "border_area_fraction", "border_share",
           "border_summary", "centre_prior_maps", "deletion_insertion", "faithfulness",
           "pointing_game", "random_maps", "same_class_partners", "smooth_random_maps"]


# --------------------------------------------------------------------------- deletion / insertion


def random_maps(n: int, h: int, w: int, seed: int = 0) -> Tensor:
    """Uniform random maps (n, h, w), the same for the same seed: the no-information baseline."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand((n, h, w), generator=g, dtype=torch.float32)


def smooth_random_maps(n: int, h: int, w: int, cells: tuple[int, int] = (4, 4),
                       seed: int = 0) -> Tensor:
    """Random maps as smooth as a Grad-CAM: uniform values on a `cells` grid (the explained
    layer's resolution), upsampled bilinearly to (h, w) exactly like the CAM. The baseline for
    "is Grad-CAM better than any blob of that coarseness?" (i.i.d. pixel noise is far easier to
    beat: it scatters each deletion step over the whole image)."""
    ch, cw = (int(c) for c in cells)
    if ch < 1 or cw < 1:
        raise CifarlensError(f"cells must be >= 1, got {cells}")
    g = torch.Generator().manual_seed(int(seed))
    low = torch.rand((n, 1, ch, cw), generator=g, dtype=torch.float32)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def centre_prior_maps(n: int, h: int, w: int, sigma: float = 0.25) -> Tensor:
    """The same centred Gaussian for every image (sigma as a fraction of the side): an
    input-independent map that only knows objects sit near the middle. On the issue's smoke
    model it got 85% of Grad-CAM's deletion gain over i.i.d. noise, so Grad-CAM must beat it
    before its maps can be said to carry image-specific evidence."""
    if sigma <= 0:
        raise CifarlensError(f"sigma must be positive, got {sigma}")
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h - 0.5
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w - 0.5
    m = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))
    return m.expand(n, h, w).clone()


def same_class_partners(classes: Any, seed: int = 0) -> np.ndarray:
    """For each image, another image of the same class (-1 where its class has no other):
    a random cycle within each class, so no image is its own partner and every partner is
    used once. Image i's partner's Grad-CAM map is the image-specificity control: a map of the
    right class that is not this image's own (Adebayo et al. 2018's sanity-check spirit)."""
    c = np.asarray(classes).ravel()
    rng = np.random.default_rng(seed)
    out = np.full(c.size, -1, dtype=np.int64)
    for k in np.unique(c):
        idx = np.flatnonzero(c == k)
        if idx.size >= 2:
            cyc = rng.permutation(idx)
            out[cyc] = np.roll(cyc, -1)
    return out


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding, one depthwise conv per axis for the batch."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)  # reflect pad must be < size
    if radius < 1:
        return x.clone()
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


BLUR_SIGMA = 2.0  # px: the "blur" baseline's Gaussian, as in RISE's blurred-image variant

def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    maps: Tensor,
    *,
    steps: int = 32,
    batch_size: int = 256,
    baseline: str = "blur",
    progress: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE) of the target-class softmax.

    Pixels are ranked by the map (descending; ties by row-major pixel index). Deletion replaces
    the top fraction f of pixels (all channels) with the baseline, for f = 0, 1/steps, ..., 1;
    insertion starts from the baseline and puts image pixels back in the same order. Baseline
    "zero" is 0 in normalized space (the dataset mean); "blur" is a Gaussian-blurred copy of the
    image (sigma BLUR_SIGMA px). A faithful map has a LOW deletion AUC and a HIGH insertion AUC.
    Costs 2 * (steps + 1) forward passes per image; `batch_size` bounds the model's batch.

    Returns deletion and insertion (N, steps+1), their trapezoid AUCs over f in [0, 1] (N,),
    and fractions (steps+1,). `progress`, if given, is called with the number of images after
    each chunk.
    """
    x_all = _as_images(images)
    n, c, h, w = x_all.shape
    t_all = _as_targets(targets, n)
    m_all = torch.as_tensor(maps).detach().float().cpu()
    if m_all.shape != (n, h, w):
        raise CifarlensError(
            f"maps must be (N, H, W) = {(n, h, w)} like the images, got {tuple(m_all.shape)} "
            "(use gradcam(..., upsample=True))"
        )
    if not torch.isfinite(m_all).all():
        raise CifarlensError("maps contain NaN or inf")
    if baseline not in ("blur", "zero"):
        raise CifarlensError(f"baseline must be 'blur' or 'zero', got {baseline!r}")
    if steps < 1 or batch_size < 1:
        raise CifarlensError("steps and batch_size must be >= 1")

    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.as_tensor(np.rint(fractions * h * w).astype(np.int64))  # pixels per step
    # rank[i, p] = position of pixel p in image i's order; stable sort makes ties deterministic
    order = torch.argsort(-m_all.reshape(n, -1), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1).contiguous())

    device = _device_of(model)
    per_chunk = max(1, batch_size // (steps + 1))  # images whose variants fill one model batch
    dele = np.empty((n, steps + 1))
    ins = np.empty((n, steps + 1))
    with _eval_mode(model), torch.no_grad(), torch.autocast(device.type, enabled=False):
        for start in range(0, n, per_chunk):
            sl = slice(start, start + per_chunk)
            x = x_all[sl].to(device=device, dtype=torch.float32)
            b = len(x)
            base = _gaussian_blur(x, BLUR_SIGMA) if baseline == "blur" else torch.zeros_like(x)
            # (b, steps+1, 1, h, w): True where the pixel is among the top counts[k]
            top = (rank[sl].to(device).view(b, 1, 1, h, w)
                   < counts.to(device).view(1, -1, 1, 1, 1))
            xs, bs = x[:, None], base[:, None]
            t = t_all[sl].to(device).repeat_interleave(steps + 1)
            for out, variants in ((dele, torch.where(top, bs, xs)),
                                  (ins, torch.where(top, xs, bs))):
                # NHWC, as every inference in cifarlens: CPU max-pool is ~8x slower in NCHW
                logits = model(variants.reshape(b * (steps + 1), c, h, w)
                               .contiguous(memory_format=torch.channels_last))
                _check_targets_range(t_all, logits.shape[1], "targets")
                p = logits.float().softmax(dim=1).gather(1, t[:, None])[:, 0]
                out[sl] = p.view(b, steps + 1).double().cpu().numpy()
            if progress is not None:
                progress(b)

    return {
        "deletion": dele,
        "insertion": ins,
        "deletion_auc": _trapezoid(dele, fractions),
        "insertion_auc": _trapezoid(ins, fractions),
        "fractions": fractions,
    }


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[:, 1:] + y[:, :-1]) * 0.5 * np.diff(x)).sum(axis=1)


# --------------------------------------------------------------------------- localisation


def pointing_game(
    maps: Tensor | np.ndarray, boxes: np.ndarray | Sequence[Sequence[int]], *, tolerance: int = 0
) -> np.ndarray:
    """Pointing game (Zhang et al. 2016): does each map's maximum fall inside its object box?

    boxes are (N, 4) [x0, y0, x1, y1] in pixels, half-open, x = column; they are grown by
    `tolerance` px and clipped to the image. A map "points" at the set of its maximal pixels;
    it hits only if ALL of them lie in the box, so a flat map cannot hit by luck of tie-breaking.
    An all-zero map points nowhere and is a miss. Returns (N,) bool.
    """
    m = _as_maps(maps)
    n, h, w = m.shape
    b = np.asarray(boxes)
    if b.shape != (n, 4):
        raise CifarlensError(f"boxes must be (N, 4) = ({n}, 4), got {b.shape}")
    if not np.issubdtype(b.dtype, np.number):
        raise CifarlensError(f"boxes must be numeric, got dtype {b.dtype}")
    b = np.rint(b).astype(np.int64)
    x0 = np.clip(b[:, 0] - tolerance, 0, w)
    y0 = np.clip(b[:, 1] - tolerance, 0, h)
    x1 = np.clip(b[:, 2] + tolerance, 0, w)
    y1 = np.clip(b[:, 3] + tolerance, 0, h)
    ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    inside = ((ys >= y0[:, None, None]) & (ys < y1[:, None, None])
              & (xs >= x0[:, None, None]) & (xs < x1[:, None, None]))
    mx = m.reshape(n, -1).max(axis=1) if n else np.zeros(0)
    is_max = m == mx[:, None, None]
    return (mx > 0) & ~(is_max & ~inside).any(axis=(1, 2))


def border_area_fraction(h: int, w: int, border: int) -> float:
    """Share of an h x w image's pixels within `border` px of its edge (a uniform map's share)."""
    if h < 1 or w < 1 or border < 0:
        raise CifarlensError(f"need h, w >= 1 and border >= 0, got {h}, {w}, {border}")
    inner = max(h - 2 * border, 0) * max(w - 2 * border, 0)
    return 1.0 - inner / (h * w)


# 4 px on 32x32 = 43.75% of the pixels (border_area_fraction(32, 32, 4)): the outer eighth of each
# side, which in CIFAR's mostly centred photos is nearly all background, while 6 px (61%) or 8 px
# (75%, the whole outer ring of a 4x4 CAM) would cut into the object itself.
DEFAULT_BORDER = 4


def border_share(maps: Tensor | np.ndarray, border: int = DEFAULT_BORDER) -> np.ndarray:
    """Fraction of each map's mass (negatives clipped to 0) within `border` px of the edge.

    A "background reliance" measure: compare with `border_area_fraction(h, w, border)`, the
    share a uniform map would give. NaN where a map has no positive mass.
    """
    m = np.clip(_as_maps(maps), 0, None)
    n, h, w = m.shape
    border_area_fraction(h, w, border)  # validates
    edge = np.ones((h, w), dtype=bool)
    edge[border:h - border, border:w - border] = False
    total = m.reshape(n, -1).sum(axis=1)
    on_edge = (m * edge).reshape(n, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, on_edge / np.where(total > 0, total, 1), np.nan)


def _as_maps(maps: Tensor | np.ndarray) -> np.ndarray:
    m = maps.detach().cpu().double().numpy() if isinstance(maps, Tensor) else np.asarray(
        maps, dtype=np.float64)
    if m.ndim != 3:
        raise CifarlensError(f"maps must be (N, H, W), got shape {m.shape}")
    if np.isnan(m).any():
        raise CifarlensError("maps contain NaN")
    return m


BORDER = DEFAULT_BORDER  # px: the outer ring of a 32x32 image (4 px = 43.75% of its pixels)

# The maps Grad-CAM is measured against, weakest first (summary/report names).
BASELINE_NAMES = {"random": "i.i.d. random pixels", "smooth_random": "smooth random map",
                  "centre_prior": "centre prior",
                  "same_class_other": "another image's map of the same class"}


@dataclass(frozen=True)
class FaithfulnessSettings:
    """steps: deletion/insertion steps; batch_size: the model's batch; seed: the random
    baselines' and the bootstrap's; level: the intervals' confidence level."""

    steps: int = 16
    batch_size: int = 256
    seed: int = 0
    level: float = 0.95


def faithfulness(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, maps: torch.Tensor,
                 cells: tuple[int, ...], settings: FaithfulnessSettings = FaithfulnessSettings(),
                 progress: Callable[[int], object] | None = None
                 ) -> tuple[dict[str, Any], dict[str, dict]]:
    """Deletion/insertion AUCs of Grad-CAM and of four reference maps on the same images, and
    paired bootstrap CIs over the images of Grad-CAM minus each reference.

    References: i.i.d. random pixels, a smooth random map at the layer's resolution (`cells`,
    upsampled like the CAM), a fixed centred Gaussian, and another image's Grad-CAM map of the
    same target class (`same_class_partners`; compared on the images that have such a partner).
    A map that only beats i.i.d. noise may just be smooth and central, and one that does not
    beat another image's map of its class is not specific to this image; the CIs say what the
    images support.
    """
    steps, batch_size, seed, level = (settings.steps, settings.batch_size, settings.seed,
                                      settings.level)
    n, _, h, w = x.shape
    maps_by = {"gradcam": maps, "random": random_maps(n, h, w, seed),
               "smooth_random": smooth_random_maps(n, h, w, cells[-2:], seed),
               "centre_prior": centre_prior_maps(n, h, w)}
    # progress: called with images done, once per chunk of each of the five maps (5 N in all)
    res = {k: deletion_insertion(model, x, t, m, steps=steps, batch_size=batch_size,
                                 progress=progress)
           for k, m in maps_by.items()}
    targets = _as_targets(t, n)
    partner = same_class_partners(targets.numpy(), seed)
    paired = np.flatnonzero(partner >= 0)  # images with another image of their class
    subsets: dict[str, Any] = {k: slice(None) for k in maps_by}
    if paired.size:
        sel = torch.from_numpy(paired)
        res["same_class_other"] = deletion_insertion(
            model, x[sel], targets[sel], torch.as_tensor(maps)[torch.from_numpy(partner[paired])],
            steps=steps,
            batch_size=batch_size, progress=progress)
        subsets["same_class_other"] = paired
    if progress is not None and paired.size < n:  # the images without a partner: done too
        progress(n - int(paired.size))
    g = res["gradcam"]
    out: dict[str, Any] = {
        "n": int(n), "deletion_auc": float(np.mean(g["deletion_auc"])),
        "insertion_auc": float(np.mean(g["insertion_auc"])),
        "random_deletion_auc": float(np.mean(res["random"]["deletion_auc"])),
        "random_insertion_auc": float(np.mean(res["random"]["insertion_auc"])),
        "level": level, "cells": [int(c) for c in cells[-2:]],
        "noise": f"test-image sampling (paired bootstrap over the {n} images)",
        "comparisons": {},
    }
    for k in BASELINE_NAMES:
        if k not in res:
            continue  # no image has another of its class here
        b, on = res[k], subsets[k]
        gd, gi = np.asarray(g["deletion_auc"])[on], np.asarray(g["insertion_auc"])[on]
        out["comparisons"][k] = {
            "name": BASELINE_NAMES[k],
            "deletion_auc": float(np.mean(b["deletion_auc"])),
            "insertion_auc": float(np.mean(b["insertion_auc"])),
            # Grad-CAM minus baseline: negative is better for deletion, positive for insertion
            "deletion_diff": S.paired_mean_diff_ci(gd, b["deletion_auc"], level, seed=seed),
            "insertion_diff": S.paired_mean_diff_ci(gi, b["insertion_auc"], level, seed=seed),
        }
    return out, res


def border_summary(shares: dict[str, np.ndarray], cells: tuple[int, ...], *, seed: int = 0,
                   size: tuple[int, int] = (32, 32)) -> dict[str, Any]:
    """Share of Grad-CAM mass within BORDER px of the edge: failures vs correct predictions,
    with a two-sided permutation test of the difference in means (scipy, seeded; noise covered:
    which test images were drawn), and two references: a uniform map and the centre prior.

    `resolves_border` is False when one cell of the explained layer is wider than the band
    (the default 4x4 layer: 8 px cells against a 4 px band). Then the share is only a function
    of the outer ring of cells, and as every cell's receptive field covers the whole image, it
    says where the map's mass is, not whether the model relies on background; the report says
    that and draws no background conclusion.
    """
    from scipy import stats as sps

    h, w = size
    ch, cw = (int(c) for c in cells[-2:])
    cell_px = max(h / ch, w / cw)
    centre = border_share(centre_prior_maps(1, h, w), border=BORDER)[0]
    out: dict[str, Any] = {"border_px": BORDER, "cells": [ch, cw], "cell_px": cell_px,
                           "resolves_border": bool(cell_px <= BORDER),
                           "uniform": float(border_area_fraction(h, w, BORDER)),
                           "centre_prior": float(centre)}
    clean = {k: v[np.isfinite(v)] for k, v in shares.items()}
    for k, v in clean.items():
        out[k] = float(v.mean()) if len(v) else None
        out[f"n_{k}"] = int(len(v))
    f, c = clean.get("failures"), clean.get("correct")
    if f is not None and c is not None and len(f) >= 2 and len(c) >= 2:
        res = sps.permutation_test((f, c), lambda a, b, axis: a.mean(axis) - b.mean(axis),
                                   permutation_type="independent", vectorized=True,
                                   n_resamples=9999, alternative="two-sided",
                                   random_state=np.random.default_rng(seed))
        out["diff"] = float(f.mean() - c.mean())
        out["p_value"] = float(res.pvalue)
        out["test"] = ("two-sided permutation test of the difference in means, failures vs "
                       "correct predictions (9,999 resamples; test-image sampling)")
    return out

