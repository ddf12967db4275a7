"""Mini-batches kept as uint8 tensors and augmented as batched tensor ops (airbench's way)."""

from __future__ import annotations

import numpy as np
import torch

from cifarlens.data.split import normalize
from cifarlens.errors import CifarlensError
from cifarlens.training import augment as A

# --- batching and augmentation (batched tensor ops on the training device) ----------------------
from cifarlens.training.augment import (
    AUGMENTS,
    MIXING,
    random_crop,
    random_flip,
)


class Batches:
    """Epochs of seeded, shuffled, augmented, normalized batches from a uint8 tensor on `device`.

    The permutation and augmentation draws come from a CPU generator seeded by (seed, epoch), so
    an epoch is the same whether the run was resumed or not. The last incomplete batch is dropped
    (a different random remainder each epoch) so every step sees the same batch size.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std, *,
                 device: torch.device, augment: str = "none", seed: int = 0,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 num_classes: int | None = None, cutout_size: int = 8, mixup_alpha: float = 1.0,
                 cutmix_alpha: float = 1.0):
        if augment not in AUGMENTS:
            raise CifarlensError(f"unknown augment {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if augment in MIXING and not num_classes:
            raise CifarlensError(f"augment {augment} mixes labels: Batches needs num_classes")
        self.num_classes, self.cutout_size = num_classes, cutout_size
        self.alpha = mixup_alpha if augment == "mixup" else cutmix_alpha
        self.x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size = min(batch_size, len(self.x))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.device, self.augment, self.seed = device, augment, seed
        self.dtype, self.channels_last = dtype, channels_last

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def epoch(self, epoch: int):
        """Batches of (normalized images, labels): int64 labels, or for mixup/cutmix float soft
        targets (batch, num_classes). Draw order: permutation, crop/flip, then the method's own
        draws, so every augment sees the same batches as `none` and the same crops as
        `crop-flip` (existing runs' numbers do not change)."""

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n, steps, bs = len(self.x), len(self), self.batch_size
        perm = torch.randperm(n, generator=g)
        if self.augment != "none":
            dx = torch.randint(0, 9, (n,), generator=g).to(self.device)
            dy = torch.randint(0, 9, (n,), generator=g).to(self.device)
            flip = (torch.rand(n, generator=g) < 0.5).to(self.device)
        h, w = self.x.shape[-2:]
        if self.augment == "cutout":  # one square centre per image
            cy = torch.randint(0, h, (n,), generator=g).to(self.device)
            cx = torch.randint(0, w, (n,), generator=g).to(self.device)
        elif self.augment in A.MIXING:  # per batch: partners, lam (and a box centre for cutmix)
            partners = torch.argsort(torch.rand(steps, bs, generator=g), dim=1).to(self.device)
            lams = A.beta_draws(g, self.alpha, steps)
            centres = torch.stack([torch.randint(0, h, (steps,), generator=g),
                                   torch.randint(0, w, (steps,), generator=g)], 1).tolist()
        perm = perm.to(self.device)
        for i in range(steps):
            sel = perm[i * bs:(i + 1) * bs]
            xb, yb = self.x[sel], self.y[sel]
            if self.augment != "none":
                xb = random_flip(random_crop(xb, dx[sel], dy[sel]), flip[sel])
            xb = normalize(xb, self.mean, self.std, self.dtype)
            if self.augment == "cutout":
                xb = A.cutout(xb, cy[sel], cx[sel], self.cutout_size)
            elif self.augment == "mixup":
                lam = float(lams[i])
                xb, yb = A.mixup(xb, partners[i], lam), A.mixed_targets(
                    yb, partners[i], lam, self.num_classes)
            elif self.augment == "cutmix":
                box = A.cutmix_box(h, w, float(lams[i]), *centres[i])
                xb, lam = A.cutmix(xb, partners[i], box)
                yb = A.mixed_targets(yb, partners[i], lam, self.num_classes)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
