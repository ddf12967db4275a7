"""Training augmentations as batched tensor ops on the training device (no per-image Python).

Each function is pure: the random draws are its arguments, so `data.Batches` draws them from
its seeded generator (permutation first, then crop/flip, then the method's own draws) and both
arms of a study see the same batch order and, for `cutout`/`mixup`/`cutmix` against
`crop-flip`, the same crops and flips.

- `crop-flip`: 4-px zero-padded random crop + horizontal flip (the seed's change).
- `cutout`: crop-flip, then one size x size square per image set to 0 after normalization (the
  dataset mean), centred uniformly in the image and clipped at its border (DeVries & Taylor
  2017: 8x8 for CIFAR-100, 16x16 for CIFAR-10; default `cutout_size` 8).
- `mixup`: crop-flip, then each image mixed with a partner from the same batch,
  x = lam * x_a + (1 - lam) * x_b, one lam ~ Beta(alpha, alpha) per batch (Zhang et al. 2018,
  alpha 1 on CIFAR; default `mixup_alpha` 1.0).
- `cutmix`: crop-flip, then a box of area ~ (1 - lam) of each image replaced by its partner's,
  lam ~ Beta(alpha, alpha) per batch, box centred uniformly and clipped; the label weight is the
  area actually kept (Yun et al. 2019, alpha 1; default `cutmix_alpha` 1.0). Applied to every
  batch (the paper's CIFAR runs used probability 0.5).

Mixed labels are soft targets lam * onehot(y_a) + (1 - lam) * onehot(y_b): cross-entropy with
them (and label smoothing) equals lam * CE(y_a) + (1 - lam) * CE(y_b). Only the training loss
sees them; evaluation is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

AUGMENTS = ("none", "crop-flip", "cutout", "mixup", "cutmix")
# augments that mix two images' labels (the training loss gets soft targets)
MIXING = ("mixup", "cutmix")


# --- crop and flip ---------------------------------------------------------------------------------


def random_crop(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crop each image of a zero-padded batch at its own offset (dx, dy in [0, 2*pad])."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    bi = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


# --- cutout ----------------------------------------------------------------------------------------


def box_mask(h: int, w: int, cy: torch.Tensor, cx: torch.Tensor, bh: torch.Tensor | int,
             bw: torch.Tensor | int) -> torch.Tensor:
    """(N, 1, h, w) bool: True inside each image's box of bh x bw pixels whose top-left corner is
    (cy - bh // 2, cx - bw // 2), clipped at the image border."""
    n = cy.shape[0]
    bh = torch.as_tensor(bh, device=cy.device).expand(n)
    bw = torch.as_tensor(bw, device=cy.device).expand(n)
    y0, x0 = (cy - bh // 2).view(n, 1), (cx - bw // 2).view(n, 1)
    r = torch.arange(h, device=cy.device).view(1, h)
    c = torch.arange(w, device=cy.device).view(1, w)
    in_r = (r >= y0) & (r < y0 + bh.view(n, 1))
    in_c = (c >= x0) & (c < x0 + bw.view(n, 1))
    return (in_r.view(n, 1, h, 1) & in_c.view(n, 1, 1, w))


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square per image, centred at (cy, cx), clipped at the border."""
    _, _, h, w = x.shape
    return x.masked_fill(box_mask(h, w, cy, cx, size, size), 0)


# --- mixup and cutmix ------------------------------------------------------------------------------


def mixup(x: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * x + (1 - lam) * x[partner] (one lam for the batch)."""
    return x * lam + x[partner] * (1.0 - lam)


def cutmix_box(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """The pasted box (y0, y1, x0, x1): sides sqrt(1 - lam) of the image's, centred at (cy, cx),
    clipped at the border (so its area may be smaller than (1 - lam) * h * w)."""
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(h * cut), int(w * cut)
    y0, x0 = min(max(cy - bh // 2, 0), h), min(max(cx - bw // 2, 0), w)
    y1, x1 = min(max(cy - bh // 2 + bh, 0), h), min(max(cx - bw // 2 + bw, 0), w)
    return y0, y1, x0, x1


def cutmix(x: torch.Tensor, partner: torch.Tensor, box: tuple[int, int, int, int]
           ) -> tuple[torch.Tensor, float]:
    """Paste x[partner] into `box` of every image; returns the batch and the label weight of the
    original images, 1 - (box area / image area)."""
    _, _, h, w = x.shape
    y0, y1, x0, x1 = box
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mixed_targets(y: torch.Tensor, partner: torch.Tensor, lam: float, num_classes: int
                  ) -> torch.Tensor:
    """Soft targets (N, num_classes): lam on each image's label, 1 - lam on its partner's."""
    t = torch.zeros(len(y), num_classes, dtype=torch.float32, device=y.device)
    t.scatter_(1, y.view(-1, 1), lam)
    t.scatter_add_(1, y[partner].view(-1, 1),
                   torch.full((len(y), 1), 1.0 - lam, dtype=torch.float32, device=y.device))
    return t


def beta_draws(g: torch.Generator, alpha: float, n: int) -> np.ndarray:
    """n draws from Beta(alpha, alpha), seeded from `g` (torch has no seeded Beta sampler)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return np.random.default_rng(seed).beta(alpha, alpha, n)
