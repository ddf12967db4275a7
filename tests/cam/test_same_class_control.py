"""The image-specificity control of issue 22: Grad-CAM against another image's map of the same
class. A map that points at this image's own evidence beats it; a map that is the same for
every image cannot (no interval, no claim)."""

import numpy as np
import pytest
import torch
from torch import nn

from cifarlens.cam.quality import FaithfulnessSettings, faithfulness, same_class_partners


def test_partners_are_another_image_of_the_same_class():
    classes = np.array([3, 1, 3, 3, 1, 7, 3])
    p = same_class_partners(classes, seed=0)
    assert p[5] == -1  # class 7 has one image
    for i in np.flatnonzero(p >= 0):
        assert p[i] != i and classes[p[i]] == classes[i]
    # a cycle within each class: every image of it is someone's partner once
    for k in (1, 3):
        idx = np.flatnonzero(classes == k)
        assert sorted(p[idx]) == sorted(idx)
    assert np.array_equal(p, same_class_partners(classes, seed=0))  # seeded
    assert np.all(same_class_partners(np.arange(4)) == -1)


class _WhereModel(nn.Module):
    """Class 1's logit is the agreement of channels 0 and 1 (a checkerboard in both, which a
    blur destroys), wherever in the image it is; class 0's is constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        s = (x[:, 0] * x[:, 1]).sum(dim=(1, 2)) * 0.1
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _images(n: int, seed: int = 0):
    """Each image has its evidence in its own 8x8 block; the map that points at it."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(0, 0.05, (n, 3, 32, 32)).astype(np.float32))
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1)
    own = torch.zeros((n, 32, 32))
    for i in range(n):
        r, c = (int(v) * 8 for v in rng.integers(0, 4, size=2))
        x[i, 0, r:r + 8, c:c + 8] = checker
        x[i, 1, r:r + 8, c:c + 8] = checker
        own[i, r:r + 8, c:c + 8] = 1.0
    return x, own


def test_an_image_specific_map_beats_another_images_map_of_its_class():
    n = 16
    x, own = _images(n)
    t = torch.ones(n, dtype=torch.long)
    quick = FaithfulnessSettings(steps=8, batch_size=64, seed=0)
    res, curves = faithfulness(_WhereModel(), x, t, own, (4, 4), quick)
    c = res["comparisons"]["same_class_other"]
    assert c["name"] == "another image's map of the same class"
    assert c["deletion_diff"]["hi"] < 0 and c["insertion_diff"]["lo"] > 0
    assert c["deletion_diff"]["n"] == n  # every image has a partner (one class)
    # the reference's AUCs are the partner maps' on these images, computed independently
    partner = same_class_partners(t.numpy(), 0)
    from cifarlens.cam.quality import deletion_insertion

    ref = deletion_insertion(_WhereModel(), x, t, own[torch.from_numpy(partner)], steps=8)
    assert c["deletion_auc"] == pytest.approx(float(np.mean(ref["deletion_auc"])))


def test_the_same_map_for_every_image_cannot_beat_the_control():
    n = 12
    x, own = _images(n, seed=1)
    t = torch.ones(n, dtype=torch.long)
    same = own[:1].expand(n, 32, 32).clone()
    res, _ = faithfulness(_WhereModel(), x, t, same, (4, 4),
                          FaithfulnessSettings(steps=8, batch_size=64, seed=0))
    d = res["comparisons"]["same_class_other"]["deletion_diff"]
    assert d["diff"] == 0 and d["lo"] is None
    # no image with another of its class: no control, the others stay
    res, _ = faithfulness(_WhereModel(), x[:2], torch.tensor([0, 1]), own[:2], (4, 4),
                          FaithfulnessSettings(steps=8, batch_size=64, seed=0))
    assert "same_class_other" not in res["comparisons"] and "centre_prior" in res["comparisons"]
