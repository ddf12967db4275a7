"""Augmentations: what each must do to a batch, the draw order that keeps study arms paired,
and the mixed-label loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarlens.data.split import channel_stats, normalize
from cifarlens.errors import CifarlensError
from cifarlens.training import augment as A
from cifarlens.training.batches import Batches

CPU = torch.device("cpu")


def _data(n=70, k=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, k, n)
    return x, y, *channel_stats(x)


def _batches(augment, seed=1, bs=32, **kw):
    x, y, mean, std = _data()
    return Batches(x, y, bs, mean, std, device=CPU, augment=augment, seed=seed, num_classes=10,
                   **kw)


def _old_epoch(b: Batches, epoch: int):
    """The epoch code as it was before cutout/mixup/cutmix existed (none and crop-flip)."""
    g = torch.Generator().manual_seed(b.seed * 1_000_003 + epoch)
    n = len(b.x)
    perm = torch.randperm(n, generator=g)
    if b.augment == "crop-flip":
        dx = torch.randint(0, 9, (n,), generator=g)
        dy = torch.randint(0, 9, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
    for i in range(len(b)):
        sel = perm[i * b.batch_size:(i + 1) * b.batch_size]
        xb = b.x[sel]
        if b.augment == "crop-flip":
            xb = A.random_flip(A.random_crop(xb, dx[sel], dy[sel]), flip[sel])
        yield normalize(xb, b.mean, b.std), b.y[sel]


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_none_and_crop_flip_batches_are_bit_identical_to_before(augment):
    b = _batches(augment)
    for epoch in (0, 3):
        for (xa, ya), (xb, yb) in zip(b.epoch(epoch), _old_epoch(b, epoch), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_cutout_zeroes_one_square_of_the_right_size_clipped_at_the_border():
    x = torch.ones(4, 3, 32, 32)
    cy, cx = torch.tensor([16, 0, 31, 10]), torch.tensor([16, 0, 31, 3])
    out = A.cutout(x, cy, cx, 8)
    zero = (out == 0).all(1)  # (N, H, W): zeroed in every channel
    assert ((out == 0) == zero.unsqueeze(1)).all()  # no channel zeroed alone
    assert zero.sum((1, 2)).tolist() == [64, 16, 25, 8 * 7]  # centre, two corners, left border
    assert zero[0, 12:20, 12:20].all() and zero[1, :4, :4].all() and zero[2, 27:, 27:].all()
    assert zero[3, 6:14, 0:7].all()
    assert (out[~zero.unsqueeze(1).expand_as(out)] == 1).all()  # the rest untouched


def test_mixup_mixes_images_and_labels_with_the_same_weight():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 2, 3, 3, 5])
    partner = torch.tensor([1, 0, 3, 4, 2, 5])
    lam = 0.3
    out = A.mixup(x, partner, lam)
    assert torch.allclose(out, 0.3 * x + 0.7 * x[partner])
    t = A.mixed_targets(y, partner, lam, 7)
    assert t.shape == (6, 7) and ((t >= 0) & (t <= 1)).all()
    assert torch.allclose(t.sum(1), torch.ones(6))
    assert t[0, 0] == pytest.approx(0.3) and t[0, 1] == pytest.approx(0.7)
    assert t[3, 3] == pytest.approx(1.0)  # partner of the same class: one label, weight 1
    assert t[5, 5] == pytest.approx(1.0)  # its own partner


def test_cutmix_pastes_the_partner_and_lambda_is_the_area_kept():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 32, 32, generator=g)
    partner = torch.tensor([4, 3, 2, 1, 0])
    for lam, cy, cx in ((0.75, 16, 16), (0.5, 0, 0), (0.1, 30, 5), (0.999, 8, 8)):
        box = A.cutmix_box(32, 32, lam, cy, cx)
        y0, y1, x0, x1 = box
        out, kept = A.cutmix(x, partner, box)
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(out[:, :, inside], x[partner][:, :, inside])
        assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
        assert kept == pytest.approx(1 - inside.sum().item() / 1024)
        if (cy, cx) == (16, 16):  # not clipped: the box's area is (1 - lam) of the image
            assert (y1 - y0) * (x1 - x0) == int(32 * math.sqrt(1 - lam)) ** 2 == 256


def test_mixed_target_loss_is_the_weighted_sum_of_two_cross_entropies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    partner = torch.randperm(8, generator=g)
    for ls in (0.0, 0.1):
        t = A.mixed_targets(y, partner, 0.35, 10)
        want = 0.35 * F.cross_entropy(logits, y, label_smoothing=ls) + \
            0.65 * F.cross_entropy(logits, y[partner], label_smoothing=ls)
        assert F.cross_entropy(logits, t, label_smoothing=ls).item() == pytest.approx(
            want.item(), rel=1e-6)


def test_beta_draws_are_seeded_and_in_range():
    a = A.beta_draws(torch.Generator().manual_seed(3), 1.0, 500)
    b = A.beta_draws(torch.Generator().manual_seed(3), 1.0, 500)
    assert np.array_equal(a, b) and ((a > 0) & (a < 1)).all()
    assert abs(a.mean() - 0.5) < 0.05  # Beta(1, 1) is uniform
    small = A.beta_draws(torch.Generator().manual_seed(3), 0.2, 500)
    assert np.mean((small < 0.1) | (small > 0.9)) > 0.5  # small alpha: mostly near 0 or 1


@pytest.mark.parametrize("augment", ["cutout", "mixup", "cutmix"])
def test_every_augment_keeps_the_batch_order_and_crops_of_crop_flip(augment):
    plain = list(_batches("none").epoch(2))
    cf = list(_batches("crop-flip").epoch(2))
    aug = list(_batches(augment).epoch(2))
    again = list(_batches(augment).epoch(2))
    other_seed = list(_batches(augment, seed=2).epoch(2))
    assert len(aug) == len(cf) == 2
    for (_xn, yn), (xc, yc), (xa, ya), (x2, y2) in zip(plain, cf, aug, again, strict=True):
        assert torch.equal(yn, yc)  # same permutation
        assert torch.equal(xa, x2) and torch.equal(ya, y2)  # deterministic for a seed
        assert xa.shape == xc.shape == (32, 3, 32, 32) and xa.dtype == torch.float32
        if augment == "cutout":
            assert torch.equal(ya, yc)
            changed = (xa != xc).any(1)
            assert (xa.permute(1, 0, 2, 3)[:, changed] == 0).all()  # only zeroing
            assert (changed.sum((1, 2)) <= 64).all() and changed.sum() > 0
            continue
        assert ya.shape == (32, 10) and ((ya >= 0) & (ya <= 1)).all()
        assert torch.allclose(ya.sum(1), torch.ones(32))
        own = ya[torch.arange(32), yc]  # every image keeps its own label's weight
        assert (own > 0).all()
        lam = own.min().item()  # the batch's weight (rows whose partner has another class)
        if augment == "mixup":
            assert xa.abs().max() <= xc.abs().max() + 1e-5  # a convex mix of the batch
        else:
            changed = (xa != xc).any(1)  # (N, H, W)
            rows, cols = changed.any(0).any(1).nonzero(), changed.any(0).any(0).nonzero()
            if len(rows):
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert box.item() / 1024 <= 1 - lam + 1e-6
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(aug, other_seed, strict=True))


def test_mixing_needs_the_class_count_and_unknown_augments_are_refused():
    x, y, mean, std = _data()
    with pytest.raises(CifarlensError, match="num_classes"):
        Batches(x, y, 32, mean, std, device=CPU, augment="mixup")
    with pytest.raises(CifarlensError, match="choose from: none, crop-flip, cutout, mixup, cutmix"):
        Batches(x, y, 32, mean, std, device=CPU, augment="rotate")


def test_augment_settings_are_study_settings():
    import dataclasses

    from cifarlens.study.plan import one_change_guard, parse_change
    from cifarlens.training.config import make_config

    assert parse_change("mixup_alpha=0.2") == ("mixup_alpha", 0.2)
    assert parse_change("cutout-size=16") == ("cutout_size", 16)
    assert parse_change("augment=cutmix") == ("augment", "cutmix")
    base = make_config("smoke", augment="crop-flip")
    assert one_change_guard(base, dataclasses.replace(base, augment="cutmix")) == "augment"
    for bad in (dict(mixup_alpha=0.0), dict(cutmix_alpha=-1.0), dict(cutout_size=0)):
        with pytest.raises(CifarlensError):
            make_config("smoke", **bad)


@pytest.mark.parametrize("augment", ["cutout", "mixup", "cutmix"])
def test_training_with_each_augment_gives_finite_loss_and_plain_evaluation(synth10, tmp_path,
                                                                           augment):
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    cfg = make_config("smoke", data_dir=str(synth10), dataset="cifar10", device="cpu",
                      epochs=1, batch_size=50, train_limit=200, precision="fp32",
                      augment=augment)
    done = train(cfg, tmp_path / augment, progress=False, log=lambda m: None)
    row = done["final"]
    assert math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1
    # evaluation is the plain, unmixed cross-entropy on the validation images
    assert math.isfinite(row["val_loss"]) and 0 <= row["val_acc"] <= 1


def test_a_run_recorded_before_the_augment_settings_existed_still_resumes():
    import dataclasses

    from cifarlens.training.config import diff_configs, learned_settings, make_config

    cfg = dataclasses.asdict(make_config("smoke"))
    old = {k: v for k, v in cfg.items() if k not in ("cutout_size", "mixup_alpha", "cutmix_alpha")}
    assert diff_configs(old, cfg) == []  # the defaults are what the old run used
    assert learned_settings(old)["mixup_alpha"] == 1.0
    assert diff_configs(old, {**cfg, "mixup_alpha": 0.2}) == ["mixup_alpha: 1.0 -> 0.2"]
