"""Grad-CAM, deletion/insertion, pointing game, border share and explanation figures."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlens.cam import figures as cam_figures
from cifarlens.cam import quality as cam_metrics
from cifarlens.cam.figures import plot_deletion_insertion, plot_explanations
from cifarlens.cam.gradcam import find_cam_layer, gradcam, gradcam_pair
from cifarlens.cam.quality import (
    FaithfulnessSettings,
    border_area_fraction,
    border_share,
    deletion_insertion,
    pointing_game,
    random_maps,
)
from cifarlens.errors import CifarlensError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- models


class VGGLike(nn.Module):
    """Local copy of the models.py architecture: stages of [Conv3x3 -> BN -> ReLU] x depth, each
    followed by a 2x2 max-pool, then an MLP head; `cam_layer` is the last ReLU. Full width
    (64, 128, 256, 512) is the 10.46M-parameter model of the benchmark; tests use a narrow one."""

    def __init__(self, widths=(64, 128, 256, 512), depths=(2, 3, 3, 3), n_classes=100,
                 hidden=(1024, 512), inplace=True, set_cam_layer=True):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c, d in zip(widths, depths, strict=True):
            for _ in range(d):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=inplace)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        f_in = c_in * 2 * 2
        for f in hidden:
            head += [nn.Linear(f_in, f), nn.ReLU(inplace=inplace), nn.Dropout(0.5)]
            f_in = f
        head.append(nn.Linear(f_in, n_classes))
        self.head = nn.Sequential(*head)
        if set_cam_layer:
            self.cam_layer = self.features[-2]
        self.boom = False  # raise after the CAM layer, to test cleanup on errors

    def forward(self, x):
        f = self.features(x)
        if self.boom:
            raise RuntimeError("boom")
        return self.head(f)


def small_vgg(seed=0, **kw) -> VGGLike:
    torch.manual_seed(seed)
    m = VGGLike(widths=(8, 16, 16, 32), depths=(1, 2, 1, 2), n_classes=7, hidden=(32,), **kw)
    # non-trivial BN statistics, so eval-mode BN is not the identity
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.1)
    return m.eval()


class ColourNet(nn.Module):
    """Hand-built, untrained: class 0 = "red" evidence, class 1 = "blue" evidence.

    conv (2x2, stride 2): channel 0 = mean(R - B) - threshold, channel 1 = mean(B - R) -
    threshold over each 2x2 block; ReLU (the CAM layer, 16x16 on 32x32 input); global average
    pool; logits = scale * channels. With an optional third class whose logit is a constant.
    A threshold makes only strongly coloured blocks count, so a blurred patch counts less.
    """

    def __init__(self, threshold: float = 0.0, scale: float = 10.0,
                 bias_class: float | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=2, stride=2)
        self.conv.bias.data.fill_(-threshold)
        w = torch.zeros(2, 3, 2, 2)
        w[0, 0], w[0, 2] = 0.25, -0.25
        w[1, 2], w[1, 0] = 0.25, -0.25
        self.conv.weight.data = w
        self.relu = nn.ReLU()
        self.cam_layer = self.relu
        n_out = 2 if bias_class is None else 3
        self.fc = nn.Linear(2, n_out)
        wf = torch.zeros(n_out, 2)
        wf[0, 0], wf[1, 1] = scale, scale
        self.fc.weight.data = wf
        self.fc.bias.data = torch.zeros(n_out)
        if bias_class is not None:
            self.fc.bias.data[2] = bias_class

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def colour_image(red=None, blue=None, size=32) -> torch.Tensor:
    """(3, size, size) zero image with a red and/or blue square; squares are (row, col, side)."""
    x = torch.zeros(3, size, size)
    if red is not None:
        r, c, s = red
        x[0, r:r + s, c:c + s] = 1.0
    if blue is not None:
        r, c, s = blue
        x[2, r:r + s, c:c + s] = 1.0
    return x


# --------------------------------------------------------------------------- independent references


def gradcam_hooks_reference(model, images, targets, layer, upsample=True):
    """Textbook Grad-CAM, one image at a time, with module forward + full backward hooks and a
    plain .backward() (on a deep copy, so the caller's model is untouched)."""
    import copy

    model = copy.deepcopy(model).eval()
    layer = dict(model.named_modules())[layer]
    store = {}
    h1 = layer.register_forward_hook(lambda m, i, o: store.__setitem__("act", o.detach()))
    h2 = layer.register_full_backward_hook(
        lambda m, gi, go: store.__setitem__("grad", go[0].detach()))
    maps = []
    try:
        for x, t in zip(images, targets, strict=True):
            model.zero_grad()
            logits = model(x[None].float())
            logits[0, int(t)].backward()
            alpha = store["grad"].mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((alpha * store["act"]).sum(dim=1, keepdim=True))
            if upsample:
                cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(cam[0, 0])
    finally:
        h1.remove()
        h2.remove()
    return torch.stack(maps)


def gradcam_captum(model, images, targets, layer):
    """The library alternative the production code was measured against (see gradcam.py)."""
    from captum.attr import LayerGradCam

    a = LayerGradCam(model, layer).attribute(images, target=list(map(int, targets)),
                                             relu_attributions=True).detach()
    return F.interpolate(a, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def assert_close_rel(a, b, rel=1e-5):
    scale = max(float(b.abs().max()), 1e-12)
    diff = float((a - b).abs().max())
    assert diff <= rel * scale, f"max abs diff {diff:.3g} > {rel} * {scale:.3g}"


# --------------------------------------------------------------------------- 1. vs independent


@pytest.mark.parametrize("named", [True, False], ids=["cam_layer", "last_conv"])
def test_gradcam_matches_hooks_reference(named):
    model = small_vgg(seed=1, inplace=False, set_cam_layer=named)
    layer_name = "features.20" if named else "features.18"  # last ReLU / last Conv2d
    assert find_cam_layer(model) is dict(model.named_modules())[layer_name]
    torch.manual_seed(2)
    x = torch.randn(6, 3, 32, 32)
    for targets in ([0, 1, 2, 3, 4, 5], [6, 6, 0, 0, 3, 3]):
        got = gradcam(model, x, targets)
        assert got.shape == (6, 32, 32) and got.dtype == torch.float32 and got.device.type == "cpu"
        ref = gradcam_hooks_reference(model, x, targets, layer_name)
        assert float(ref.max()) > 0, "degenerate reference: all maps zero"
        assert_close_rel(got, ref)
        low = gradcam(model, x, targets, upsample=False)
        assert low.shape == (6, 4, 4)
        assert_close_rel(low, gradcam_hooks_reference(model, x, targets, layer_name, False))


def test_gradcam_matches_captum_with_inplace_relu():
    # in-place ReLUs right after the hooked layer must not corrupt the captured activation
    model = small_vgg(seed=3, inplace=True)
    torch.manual_seed(4)
    x = torch.randn(5, 3, 32, 32)
    t = [1, 2, 3, 4, 5]
    # the ReLU itself, and BNs whose output the next ReLU overwrites in place
    for layer in (model.cam_layer, model.features[19], model.features[5]):
        assert_close_rel(gradcam(model, x, t, layer), gradcam_captum(model, x, t, layer))


# --------------------------------------------------------------------------- 2. by hand


class GapNet(nn.Module):
    """1-channel conv (identity, or 2x2 mean with stride 2) -> global mean -> Linear(1, 2)."""

    def __init__(self, w=(2.0, -3.0), pool=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2 if pool else 1, stride=2 if pool else 1, bias=False)
        self.conv.weight.data.fill_(0.25 if pool else 1.0)
        self.fc = nn.Linear(1, 2)
        self.fc.weight.data = torch.tensor(w).view(2, 1)
        self.fc.bias.data = torch.tensor([0.5, 1.0])

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_by_hand():
    model = GapNet()
    a = torch.tensor([[1.0, -2.0, 3.0, 0.0], [4.0, 0.5, -1.0, 2.0],
                      [0.0, 1.0, 1.0, -3.0], [2.0, 2.0, 2.0, 2.0]])
    x = a.view(1, 1, 4, 4)
    # logit_c = w_c * mean(A) + b_c  =>  dlogit_c/dA = w_c / 16 everywhere, alpha = w_c / 16
    for c, w_c in ((0, 2.0), (1, -3.0)):
        want = torch.relu(w_c / 16 * a)  # raw logit: softmax would scale and mix the classes
        got = gradcam(model, x, [c], upsample=False)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
        torch.testing.assert_close(gradcam(model, x, [c])[0], want, rtol=0, atol=1e-7)


def test_gradcam_upsampling_by_hand():
    # 2x2 mean pool: A (2x2) -> map ReLU(w/4 * A), upsampled 2 -> 4 bilinearly with
    # align_corners=False: rows/cols weights [1,0], [3/4,1/4], [1/4,3/4], [0,1]
    model = GapNet(w=(4.0, -1.0), pool=True)
    a = torch.tensor([[1.0, 3.0], [-2.0, 5.0]])
    x = a.repeat_interleave(2, 0).repeat_interleave(2, 1).view(1, 1, 4, 4)
    low = torch.relu(4.0 / 4 * a)
    torch.testing.assert_close(gradcam(model, x, [0], upsample=False)[0], low)
    u = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    torch.testing.assert_close(gradcam(model, x, [0])[0], u @ low @ u.T)


# --------------------------------------------------------------------------- 3. targets matter


def test_targets_matter_and_pred_map_peaks_on_evidence():
    model = ColourNet()
    # big red square in the top-left quadrant, small blue one in the bottom-right
    img = colour_image(red=(2, 4, 10), blue=(22, 22, 6))[None]
    logits = model(img)
    assert int(logits.argmax()) == 0
    red_map, blue_map = gradcam_pair(model, img, [0], [1])
    assert not torch.allclose(red_map, blue_map)
    r, c = divmod(int(red_map[0].argmax()), 32)
    assert r < 16 and c < 16, "red-class map must peak in the top-left quadrant"
    r, c = divmod(int(blue_map[0].argmax()), 32)
    assert r >= 16 and c >= 16, "blue-class map must peak in the bottom-right quadrant"
    # the blue evidence is absent from the red map's quadrant and vice versa
    assert float(red_map[0, 16:, 16:].max()) == 0 and float(blue_map[0, :16, :16].max()) == 0


def test_gradcam_pair_equals_two_calls():
    model = small_vgg(seed=5)
    x = torch.randn(7, 3, 32, 32)
    pred, true = model(x).argmax(1), torch.tensor([0, 1, 2, 3, 4, 5, 6])
    # the same batches for both (4 + 3 images): a CPU kernel may block a batch of 7 differently
    # from one of 4 and round in another order (seen with one thread, not with two)
    mp, mt = gradcam_pair(model, x, pred, true, batch_size=4)
    torch.testing.assert_close(mp, gradcam(model, x, pred, batch_size=4), rtol=0, atol=0)
    torch.testing.assert_close(mt, gradcam(model, x, true, batch_size=4), rtol=0, atol=0)


# --------------------------------------------------------------------------- 4. hygiene


def test_no_grads_no_hooks_flags_restored():
    model = small_vgg(seed=6)
    model.train()
    model.head.eval()  # a mixed state must come back exactly as it was
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.grad = None if i % 2 else torch.full_like(p, 0.5)
    x = torch.randn(4, 3, 32, 32)
    x_before = x.clone()
    bn_before = [b.clone() for b in model.buffers()]
    maps = gradcam(model, x, [0, 1, 2, 3])
    assert float(maps.max()) > 0
    for i, p in enumerate(params):
        if i % 2:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, torch.full_like(p, 0.5))
    assert model.training and model.features.training and not model.head.training
    assert all(torch.equal(a, b) for a, b in zip(bn_before, model.buffers(), strict=True)), \
        "BN running stats changed: the model was not in eval mode"
    assert torch.equal(x, x_before)
    assert torch.is_grad_enabled()
    _assert_no_hooks(model)


def _assert_no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not m._backward_pre_hooks


def test_cleanup_after_exception_mid_call():
    model = small_vgg(seed=7)
    model.train()
    model.boom = True  # raises after the CAM layer has run and switched recording on
    with pytest.raises(RuntimeError, match="boom"):
        gradcam(model, torch.randn(2, 3, 32, 32), [0, 1])
    _assert_no_hooks(model)
    assert model.training and all(m.training for m in model.modules())
    assert torch.is_grad_enabled()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"):
            gradcam(model, torch.randn(2, 3, 32, 32), [0, 1])
        assert not torch.is_grad_enabled(), "the caller's no_grad was switched off"
    # and it works again afterwards, also when the caller is under no_grad
    model.boom = False
    with torch.no_grad():
        assert gradcam(model, torch.randn(2, 3, 32, 32), [0, 1]).shape == (2, 32, 32)
        assert not torch.is_grad_enabled()


def test_input_errors_are_clear():
    model = small_vgg(seed=8)
    x = torch.randn(3, 3, 32, 32)
    with pytest.raises(CifarlensError, match="one class index per image"):
        gradcam(model, x, [0, 1])
    with pytest.raises(CifarlensError, match=r"\[0, 7\)"):
        gradcam(model, x, [0, 1, 7])
    with pytest.raises(CifarlensError, match="not a submodule"):
        gradcam(model, x, [0, 1, 2], layer=nn.ReLU())
    unused = nn.Conv2d(3, 3, 1)
    model.add_module("unused", unused)
    with pytest.raises(CifarlensError, match="did not run"):
        gradcam(model, x, [0, 1, 2], layer=unused)
    _assert_no_hooks(model)
    with pytest.raises(CifarlensError, match="no Conv2d"):
        find_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(CifarlensError, match=r"\(N, C, h, w\)"):
        gradcam(model, x, [0, 1, 2], layer=model.head[1])
    assert gradcam(model, x[:0], []).shape == (0, 32, 32)


# --------------------------------------------------------------------------- 5. deletion/insertion


def _patch_batch(n=6, seed=0):
    """Images with one red 8x8 patch at random places; model class 0 = red, class 2 = bias."""
    g = np.random.default_rng(seed)
    imgs = torch.stack([colour_image(red=(int(g.integers(0, 24)), int(g.integers(0, 24)), 8))
                        for _ in range(n)])
    return ColourNet(threshold=0.75, scale=200.0, bias_class=1.0), imgs


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_deletion_insertion_gradcam_beats_random(baseline):
    model, x = _patch_batch()
    t = torch.zeros(len(x), dtype=torch.long)
    maps = gradcam(model, x, t)
    steps = 16
    res = deletion_insertion(model, x, t, maps, steps=steps, baseline=baseline)
    rnd = deletion_insertion(model, x, t, random_maps(len(x), 32, 32, seed=1), steps=steps,
                             baseline=baseline)
    assert set(res) == {"deletion", "insertion", "deletion_auc", "insertion_auc", "fractions"}
    np.testing.assert_allclose(res["fractions"], np.linspace(0, 1, steps + 1))
    assert res["deletion"].shape == res["insertion"].shape == (len(x), steps + 1)

    with torch.no_grad():
        p_full = model(x).softmax(1)[:, 0].numpy()
        base = torch.zeros_like(x) if baseline == "zero" else cam_metrics._gaussian_blur(x, 2.0)
        p_base = model(base).softmax(1)[:, 0].numpy()
    np.testing.assert_allclose(res["deletion"][:, 0], p_full, rtol=1e-5)
    np.testing.assert_allclose(res["insertion"][:, 0], p_base, rtol=1e-5)
    np.testing.assert_allclose(res["deletion"][:, -1], p_base, rtol=1e-5)
    np.testing.assert_allclose(res["insertion"][:, -1], p_full, rtol=1e-5)
    assert (p_full > p_base + 0.3).all(), "test images must carry clear evidence"

    for r in (res, rnd):
        for k in ("deletion", "insertion"):
            np.testing.assert_allclose(r[f"{k}_auc"], np.trapezoid(r[k], r["fractions"], axis=1)
                                       if hasattr(np, "trapezoid") else
                                       np.trapz(r[k], r["fractions"], axis=1))
    assert (res["deletion_auc"] < rnd["deletion_auc"]).all()
    assert (res["insertion_auc"] > rnd["insertion_auc"]).all()


class TopHalfNet(nn.Module):
    """logit 0 = 10 * mean of channel 0 over the top half, logit 1 = 0."""

    def forward(self, x):
        a = 10 * x[:, 0, : x.shape[2] // 2].mean(dim=(1, 2))
        return torch.stack([a, torch.zeros_like(a)], dim=1)


def test_deletion_ties_are_row_major_and_deterministic():
    # a flat map ranks pixels in row-major order: deleting half the pixels removes the top half
    x = torch.ones(2, 3, 32, 32)
    flat = torch.zeros(2, 32, 32)
    res = deletion_insertion(TopHalfNet(), x, [0, 0], flat, steps=4, baseline="zero")
    # f = 0, .25, .5: top half 100%, 50%, 0% present -> logit 10, 5, 0
    want = torch.tensor([10.0, 5.0, 0.0]).sigmoid().numpy()
    np.testing.assert_allclose(res["deletion"][0, :3], want, rtol=1e-6)
    res2 = deletion_insertion(TopHalfNet(), x, [0, 0], flat, steps=4, baseline="zero")
    np.testing.assert_array_equal(res["deletion"], res2["deletion"])


def test_blur_is_a_gaussian():
    from scipy.ndimage import gaussian_filter

    g = np.random.default_rng(0)
    img = g.normal(size=(2, 3, 32, 32)).astype(np.float32)
    got = cam_metrics._gaussian_blur(torch.from_numpy(img), 2.0).numpy()
    want = gaussian_filter(img, sigma=(0, 0, 2.0, 2.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_random_maps_deterministic():
    a, b, c = random_maps(3, 8, 8, seed=5), random_maps(3, 8, 8, seed=5), random_maps(3, 8, 8, 6)
    assert a.shape == (3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- 6. localisation


def test_pointing_game_exact():
    maps = torch.zeros(7, 32, 32)
    maps[:, 5, 10] = 1.0  # peak at row 5, column 10
    maps[5] = 0.0  # all-zero map: points nowhere
    maps[6, 5, 10] = maps[6, 20, 20] = 2.0  # two equal maxima
    boxes = np.array([
        [10, 5, 11, 6],  # exactly the peak pixel: hit
        [0, 0, 10, 6],  # x1 = 10 is excluded (half-open): miss
        [5, 10, 6, 11],  # x and y swapped: miss
        [0, 0, 32, 32],  # whole image: hit
        [11, 5, 12, 6],  # one column off: miss (hit with tolerance 1)
        [0, 0, 32, 32],  # all-zero map: miss even with the whole image
        [8, 4, 22, 22],  # both maxima inside: hit
    ])
    hit = pointing_game(maps, boxes)
    assert hit.dtype == bool
    assert hit.tolist() == [True, False, False, True, False, False, True]
    assert pointing_game(maps, boxes, tolerance=1)[4]
    boxes[6] = [8, 4, 12, 8]  # only one of the two maxima inside: miss
    assert not pointing_game(maps, boxes)[6]
    with pytest.raises(CifarlensError):
        pointing_game(maps, boxes[:3])


def test_border_share():
    assert border_area_fraction(32, 32, 8) == 0.75
    assert border_area_fraction(32, 32, 4) == 0.4375
    assert border_area_fraction(32, 32, 6) == pytest.approx(624 / 1024)
    assert border_area_fraction(32, 32, 16) == 1.0 and border_area_fraction(32, 32, 0) == 0.0
    uniform = torch.full((1, 32, 32), 0.3)
    for b in (0, 2, 4, 6, 8, 16):
        assert border_share(uniform, b)[0] == pytest.approx(border_area_fraction(32, 32, b))
    assert border_share(uniform)[0] == pytest.approx(0.4375)  # default border = 4
    m = np.zeros((4, 32, 32))
    m[0, 10:20, 12:18] = 1.0  # centre only
    m[1, 0, 31] = 5.0  # a corner pixel only
    m[2, 3, 16], m[2, 4, 16] = 1.0, 3.0  # row 3 is border (<4), row 4 is not: 1/4
    m[3] = 0.0
    share = border_share(m, 4)
    assert share[:3].tolist() == [0.0, 1.0, 0.25] and np.isnan(share[3])
    neg = -np.ones((1, 32, 32))
    neg[0, 16, 16] = 1.0  # negatives are clipped: all mass is central
    assert border_share(neg, 4)[0] == 0.0


# --------------------------------------------------------------------------- 7. figures

NASTY = ["$x^2$", "<script>alert(1)</script>", "\x1b[31mred\x1b[0m", "a\nb\u202eevil"]


def test_plot_explanations_png_and_plain_text(tmp_path, monkeypatch):
    texts: list = []
    real_save = cam_figures.save_figure

    def spy(fig, path, **kw):
        texts.extend(t for t in fig.findobj(lambda o: hasattr(o, "get_parse_math")) if t.get_text())
        real_save(fig, path, **kw)

    monkeypatch.setattr(cam_figures, "save_figure", spy)
    g = np.random.default_rng(0)
    imgs = g.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    mp = torch.rand(4, 32, 32)
    mt = torch.rand(4, 32, 32)
    mt[3] = mp[3] = 0  # no evidence at all must not divide by zero
    path = tmp_path / "sub" / "explanations.png"
    plot_explanations(imgs, mp, mt, [f"#{i}" for i in range(4)], path,
                      pred_names=NASTY, true_names=NASTY[::-1], confidences=[0.99, 0.9, 0.8, 0.5])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert list(path.parent.iterdir()) == [path], "temp files left behind"
    drawn = [t.get_text() for t in texts]
    assert "why it said $x^2$" in drawn and "evidence for $x^2$" in drawn
    assert "why it said <script>alert(1)</script>" in drawn
    assert "why it said [31mred[0m" not in drawn and "why it said red" in drawn
    assert not any("\x1b" in s or "\u202e" in s for s in drawn)
    for t in texts:
        if "$" in t.get_text():
            assert not t.get_parse_math(), f"{t.get_text()!r} would be drawn as mathtext"


def test_plot_deletion_insertion_png(tmp_path):
    model, x = _patch_batch(n=3)
    t = [0, 0, 0]
    res = deletion_insertion(model, x, t, gradcam(model, x, t), steps=4)
    rnd = deletion_insertion(model, x, t, random_maps(3, 32, 32, 0), steps=4)
    p = tmp_path / "di.png"
    plot_deletion_insertion(res, p, random_result=rnd)
    assert p.read_bytes()[:8] == PNG_SIGNATURE
    plot_deletion_insertion(res, tmp_path / "di1.png")
    assert (tmp_path / "di1.png").read_bytes()[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------- 8. batching


def test_batched_equals_unbatched():
    model = small_vgg(seed=9)
    torch.manual_seed(10)
    x = torch.randn(8, 3, 32, 32)
    t = torch.randint(0, 7, (8,))
    torch.testing.assert_close(gradcam(model, x, t, batch_size=3),
                               gradcam(model, x, t, batch_size=256), rtol=1e-5, atol=1e-7)
    maps = gradcam(model, x, t)
    a = deletion_insertion(model, x, t, maps, steps=8, batch_size=3)  # one image per chunk
    b = deletion_insertion(model, x, t, maps, steps=8, batch_size=256)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- benchmark (opt-in)


@pytest.mark.skipif(not os.environ.get("CIFARLENS_BENCH"), reason="set CIFARLENS_BENCH=1")
def test_benchmark_own_vs_captum():  # pragma: no cover - measurement, not a check
    """The measurement behind gradcam.py's choice (full-size VGG, 2048 images, batch 256)."""
    n, bs = int(os.environ.get("CIFARLENS_BENCH_N", 2048)), 256
    model = VGGLike().eval()
    x, t, t2 = torch.randn(n, 3, 32, 32), torch.randint(0, 100, (n,)), torch.randint(0, 100, (n,))
    runs = {
        "captum": lambda s: gradcam_captum(model, x[s], t[s], model.cam_layer),
        "own": lambda s: gradcam(model, x[s], t[s]),
        "captum_pair": lambda s: (gradcam_captum(model, x[s], t[s], model.cam_layer),
                                  gradcam_captum(model, x[s], t2[s], model.cam_layer)),
        "own_pair": lambda s: gradcam_pair(model, x[s], t[s], t2[s]),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i, start in enumerate(range(0, n, bs)):  # interleaved per batch: shared-CPU noise hits all
        names = list(runs)[i % len(runs):] + list(runs)[:i % len(runs)]
        for k in names:
            t0 = time.process_time()
            runs[k](slice(start, start + bs))
            times[k].append(time.process_time() - t0)
    for k, v in times.items():
        print(f"{k:12s} cpu {sum(v):7.2f} s  median/batch {np.median(v):.3f} s")


# --------------------------------------------------------------------------- faithfulness baselines


def test_smooth_random_and_centre_prior_maps():
    from cifarlens.cam.quality import centre_prior_maps, smooth_random_maps

    m = smooth_random_maps(3, 32, 32, (4, 4), seed=1)
    assert m.shape == (3, 32, 32)
    assert torch.equal(m, smooth_random_maps(3, 32, 32, (4, 4), seed=1))
    # exactly a 4x4 random grid upsampled like the CAM: downsampling by 8 recovers its cells
    low = torch.rand((3, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    up = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(m, up)
    c = centre_prior_maps(2, 32, 32)
    assert torch.equal(c[0], c[1]) and torch.equal(c[0], c[0].flip(0)) and torch.equal(c[0], c[0].T)
    assert c[0, 15:17, 15:17].min() == c.max() and c[0, 0, 0] == c.min()
    with pytest.raises(CifarlensError):
        smooth_random_maps(1, 8, 8, (0, 4))


class _PatchModel(nn.Module):
    """Class 1's logit is the top-left 8x8 patch of channel 0 against a checkerboard: evidence
    off-centre that a blur destroys. Class 0's logit is constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)  # unused: deletion/insertion need no CAM layer
        checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
        self.register_buffer("checker", checker)

    def forward(self, x):
        s = (x[:, 0, :8, :8] * self.checker).sum(dim=(1, 2)) * 0.5
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_faithfulness_beats_the_centre_prior_only_where_the_map_finds_the_evidence():
    from cifarlens.cam.quality import centre_prior_maps, faithfulness

    g = torch.Generator().manual_seed(0)
    n = 16
    x = torch.randn((n, 3, 32, 32), generator=g) * 0.3
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    x[:, 0, :8, :8] = checker * (1.0 + torch.rand((n, 1, 1), generator=g))
    t = torch.ones(n, dtype=torch.long)
    good = torch.zeros((n, 32, 32))
    good[:, :8, :8] = 1.0  # the map that points at the evidence
    model = _PatchModel()
    quick = FaithfulnessSettings(steps=8, batch_size=64, seed=0)
    res, curves = faithfulness(model, x, t, good, (4, 4), quick)
    assert res["n"] == n and res["cells"] == [4, 4] and "test-image sampling" in res["noise"]
    for k in ("random", "smooth_random", "centre_prior"):
        c = res["comparisons"][k]
        assert c["deletion_diff"]["hi"] < 0, k  # deletes the evidence sooner
        assert c["insertion_diff"]["lo"] > 0, k  # reveals it sooner
        assert c["deletion_diff"]["diff"] == pytest.approx(
            np.mean(curves["gradcam"]["deletion_auc"] - curves[k]["deletion_auc"]))
    # a map that IS the centre prior cannot beat the centre prior: no interval, no claim
    res, _ = faithfulness(model, x, t, centre_prior_maps(n, 32, 32), (4, 4), quick)
    d = res["comparisons"]["centre_prior"]["deletion_diff"]
    assert d["diff"] == 0 and d["lo"] is None


def test_border_summary_tests_failures_against_correct_and_knows_the_layer():
    from scipy import stats as sps

    from cifarlens.cam.quality import border_share, border_summary, centre_prior_maps

    rng = np.random.default_rng(0)
    f = rng.uniform(0.5, 0.7, 20)
    c = rng.uniform(0.3, 0.5, 40)
    b = border_summary({"failures": f, "correct": c}, (4, 4))
    assert b["failures"] == pytest.approx(f.mean()) and b["correct"] == pytest.approx(c.mean())
    assert b["p_value"] < 0.001 and b["diff"] == pytest.approx(f.mean() - c.mean())
    assert b["resolves_border"] is False and b["cell_px"] == 8  # 8 px cells, 4 px band
    assert b["uniform"] == pytest.approx(0.4375)
    assert b["centre_prior"] == pytest.approx(border_share(centre_prior_maps(1, 32, 32))[0])
    same = border_summary({"failures": c[:20], "correct": c[20:]}, (16, 16))
    ref = sps.permutation_test((c[:20], c[20:]), lambda a, b_, axis: a.mean(axis) - b_.mean(axis),
                               n_resamples=9999, random_state=np.random.default_rng(0))
    assert same["p_value"] == pytest.approx(ref.pvalue, abs=0.02) and same["p_value"] > 0.05
    assert same["resolves_border"] is True
    # NaN shares (all-zero maps) are left out; one failure is too few to test
    one = border_summary({"failures": np.array([0.5, np.nan]), "correct": c}, (4, 4))
    assert one["n_failures"] == 1 and "p_value" not in one


def test_targets_none_explains_the_predicted_class():
    model = ColourNet()  # red square: class 0, blue square: class 1
    x = torch.stack([colour_image(red=(i, 2 * i, 8)) if i % 3 else colour_image(blue=(i, i, 9))
                     for i in range(9)])
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert pred.tolist() == [1, 0, 0] * 3  # both classes, mixed within each batch of 4
    got = gradcam(model, x, batch_size=4)  # the argmax is taken per batch
    torch.testing.assert_close(got, gradcam(model, x, pred), rtol=0, atol=0)
    assert all(got[i].max() > 0 for i in range(9))
    other = 1 - pred
    assert not torch.allclose(got, gradcam(model, x, other))
    mp, mt = gradcam_pair(model, x, None, other)
    torch.testing.assert_close(mp, got, rtol=0, atol=0)
    torch.testing.assert_close(mt, gradcam(model, x, other), rtol=0, atol=0)


def test_layer_by_name_equals_layer_by_module_and_unknown_names_are_refused():
    model = small_vgg(seed=23)
    x = torch.randn(3, 3, 32, 32)
    names = dict(model.named_modules())
    for name in ("features.4", "features.6"):  # a conv and a ReLU (16x16 maps)
        by_name = gradcam(model, x, [0, 1, 2], layer=name)
        torch.testing.assert_close(by_name, gradcam(model, x, [0, 1, 2], layer=names[name]),
                                   rtol=0, atol=0)
    # and the name picks that layer, not the default one
    assert not torch.allclose(gradcam(model, x, [0, 1, 2], layer="features.4"),
                              gradcam(model, x, [0, 1, 2]))
    default = next(n for n, m in names.items() if m is find_cam_layer(model))
    with pytest.raises(CifarlensError) as e:
        gradcam(model, x, layer="features.99")
    msg = str(e.value)
    # the default layer first, then the last five convs (of six), not a list of every module
    assert "'features.99'" in msg and f"{default} (default), features.18," in msg
    assert "features.4" in msg and "features.0" not in msg and "1 more" in msg
    with pytest.raises(CifarlensError, match="layer must be"):
        gradcam(model, x, layer=3)


def test_overlay_is_an_rgb_uint8_blend_with_the_figure_colormap():
    import matplotlib

    from cifarlens.cam.figures import CAM_CMAP, overlay
    from cifarlens.cam.gradcam import resize_maps

    g = np.random.default_rng(3)
    img = g.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cam = g.uniform(0, 1, (32, 32))
    out = overlay(img, cam)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # a zero map: the image blended with the colormap's colour for 0 (inferno's near-black)
    zero = matplotlib.colormaps[CAM_CMAP](0.0)[:3]
    for alpha in (0.5, 0.3):
        want = np.rint(((1 - alpha) * img / 255 + alpha * np.asarray(zero)) * 255)
        assert np.array_equal(overlay(img, np.zeros((32, 32)), alpha=alpha), want.astype(np.uint8))
    # alpha 0 is the image, alpha 1 the colour-mapped map alone
    assert np.array_equal(overlay(img, cam, alpha=0), img)
    one = np.rint(matplotlib.colormaps[CAM_CMAP](cam)[..., :3] * 255)
    assert np.abs(overlay(img, cam, alpha=1).astype(int) - one).max() <= 1
    # float images in [0, 1] give the same pixels as their uint8 form
    assert np.array_equal(overlay(img / 255.0, cam), out)
    assert np.array_equal(overlay(torch.from_numpy(img / 255.0), torch.from_numpy(cam)), out)
    # a map at the layer's 4x4 resolution is upsampled like gradcam(upsample=True) does it
    low = g.uniform(0, 1, (4, 4))
    assert np.array_equal(overlay(img, low), overlay(img, resize_maps(low, (32, 32)).numpy()))
    assert not np.array_equal(overlay(img, low), overlay(img, low.repeat(8, 0).repeat(8, 1)))
    for bad, match in ((np.full((32, 32), 2.0), r"\[0, 1\].*cam.max"),
                       (np.full((32, 32), np.nan), "NaN"), (np.zeros((1, 32, 32)), "one")):
        with pytest.raises(CifarlensError, match=match):
            overlay(img, bad)
    with pytest.raises(CifarlensError, match="RGB"):
        overlay(img.transpose(2, 0, 1), cam)
    with pytest.raises(CifarlensError, match=r"\[0, 1\]"):
        overlay(img.astype(np.float32), cam)  # 0-255 floats: not an image in [0, 1]


def test_overlay_of_a_real_gradcam():
    """The README's notebook lines on a tiny model: gradcam of the prediction, scaled, overlaid."""
    from cifarlens.cam.figures import overlay

    model = small_vgg(seed=24)
    x = torch.randn(2, 3, 32, 32)
    cam = gradcam(model, x, layer="features.6")[0]
    img = ((x[0] - x[0].min()) / (x[0].max() - x[0].min())).permute(1, 2, 0)
    out = overlay(img, cam / cam.max())
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and 0 < out.mean() < 255
