"""The train/validation split, class-balanced subsets and per-dataset normalization."""

from __future__ import annotations

import numpy as np
import torch

from cifarlens.errors import CifarlensError

# --- batching and augmentation (batched tensor ops on the training device) ----------------------

# --- split and normalization -------------------------------------------------------------------


def stratified_split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded shuffle; round(val_fraction * n_c) of each class go to val. Sorted indices."""
    if not 0.0 < val_fraction < 1.0:
        raise CifarlensError(f"val fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        nv = int(round(val_fraction * len(idx)))
        val.append(idx[:nv])
        train.append(idx[nv:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_subset(labels: np.ndarray, indices: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly n of `indices` (all of them if n >= their number), seeded and class-balanced.

    Every class keeps at least one image and the rest is shared in proportion to the class
    sizes (largest remainders, ties broken by the seed), so no class is dropped and the count is
    what was asked for. n below one image per class is refused: the subset could not be
    stratified.
    """
    indices = np.asarray(indices)
    if n <= 0:
        raise CifarlensError(f"--train-limit must be positive, got {n}")
    if n >= len(indices):
        return indices
    rng = np.random.default_rng([seed, 7919])
    classes, inverse, sizes = np.unique(labels[indices], return_inverse=True, return_counts=True)
    k = len(classes)
    if n < k:
        raise CifarlensError(f"--train-limit {n} is below one image per class: the training split "
                             f"has {k} classes, so use at least {k}")
    # One image per class, then the remaining n - k by largest remainder over the other images.
    spare, rest = sizes - 1, n - k
    share = rest * spare / spare.sum()
    quota = np.floor(share).astype(np.int64)
    left = rest - int(quota.sum())
    if left:
        order = np.lexsort((rng.permutation(k), -(share - quota)))  # biggest remainder first
        quota[order[:left]] += 1
    quota += 1
    keep = []
    for c in range(k):
        idx = indices[inverse == c]
        keep.append(idx[rng.permutation(len(idx))[:quota[c]]])
    return np.sort(np.concatenate(keep))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale (computed in float64 for exactness).

    Refuses images whose colour channel is (nearly) constant: normalizing divides by the std, so
    training on them would blow up and end in a misleading "diverged ... lower --lr".
    """
    if len(images) == 0:
        raise CifarlensError("cannot compute normalization statistics: no training images")
    x = images.astype(np.float64) / 255.0
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    for c, s in enumerate(std):
        # 1e-3 is a quarter of one grey level: such a channel carries no usable signal, and
        # normalizing would scale its stray pixels by more than 1000.
        if not s >= 1e-3:
            name = ("red", "green", "blue")[c] if len(std) == 3 else str(c)
            ch = images[:, c]
            kind = "constant" if ch.min() == ch.max() else "nearly constant"
            raise CifarlensError(
                f"colour channel {c} ({name}) is {kind} over the {len(images)} training images "
                f"(value {255 * mean[c]:.1f}/255, std {255 * s:.2g} grey levels): it cannot be "
                "normalized; the dataset is not usable as CIFAR images")
    return mean.tolist(), std.tolist()


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return ((x_uint8.to(dtype) / 255.0) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
