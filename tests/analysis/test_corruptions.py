"""The corruptions against independent references: the library the reference script calls
(scipy.ndimage, Pillow), the standard library's colorsys, the reference's own loops written out
in numpy, and numbers computed by hand."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from cifarlens.analysis import _image_ops as ops
from cifarlens.analysis import corruptions as C
from cifarlens.errors import CifarlensError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (24, 3, 32, 32), dtype=np.uint8)


def _float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float() / 255


def _draws(n: int, name: str = "t", severity: int = 1) -> ops.Draws:
    return ops.Draws(np.arange(n), name, severity, torch.device("cpu"))


class FixedDraws:
    """Stands in for Draws where a test supplies the random numbers itself."""

    def __init__(self, n: int, *, integers=None, uniform=0.0) -> None:
        self.n, self._integers, self._uniform = n, integers, uniform
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.n

    def integers(self, shape, low, high):
        return self._integers.pop(0)

    def uniform(self, shape, low=0.0, high=1.0):
        return torch.full((self.n, *shape), float(self._uniform))


# --- noise: the standard deviation, the rate, the amount ---------------------------------------


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_gaussian_noise_has_the_reference_sigma(severity):
    sigma = C.ALL["gaussian_noise"].constants[severity - 1]
    grey = np.full((200, 3, 32, 32), 128, np.uint8)  # 0.502: 5 sigma from either end at most
    y = C.corrupt(grey, "gaussian_noise", severity, np.arange(200)).double() / 255
    noise = y - 128 / 255
    # truncation to uint8 lowers the mean by half a level and adds 1/12 level^2 of variance
    assert noise.mean().item() == pytest.approx(-0.5 / 255, abs=2e-4)
    expected = np.sqrt(sigma ** 2 + 1 / 12 / 255 ** 2)
    assert noise.std().item() == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_shot_noise_is_poisson_at_the_reference_rate(severity):
    c = C.ALL["shot_noise"].constants[severity - 1]
    x = torch.full((100, 3, 32, 32), 0.4)
    y = C.shot_noise(x, c, _draws(100, "shot_noise", severity)).double()
    counts = y * c  # Poisson(0.4 c): mean and variance both 0.4 c
    assert counts.mean().item() == pytest.approx(0.4 * c, rel=0.01)
    assert counts.var().item() == pytest.approx(0.4 * c, rel=0.03)
    assert torch.allclose(counts, counts.round(), atol=1e-3)  # whole counts over c


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_flips_the_reference_amount_half_to_salt(severity):
    amount = C.ALL["impulse_noise"].constants[severity - 1]
    x = torch.full((200, 3, 32, 32), 0.5)
    y = C.impulse_noise(x, amount, _draws(200, "impulse_noise", severity))
    flipped = (y != 0.5).double()
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}
    assert flipped.mean().item() == pytest.approx(amount, rel=0.05)
    assert (y == 1).double().sum().item() / flipped.sum().item() == pytest.approx(0.5, abs=0.03)


def test_speckle_noise_scales_with_the_pixel():
    c = C.ALL["speckle_noise"].constants[4]
    x = torch.cat([torch.full((100, 3, 32, 32), 0.2), torch.full((100, 3, 32, 32), 0.6)])
    y = C.speckle_noise(x, c, _draws(200)).double()
    assert (y[:100] - 0.2).std().item() == pytest.approx(0.2 * c, rel=0.02)
    assert (y[100:] - 0.6).std().item() == pytest.approx(0.6 * c, rel=0.02)
    black = C.speckle_noise(torch.zeros(2, 3, 32, 32), c, _draws(2))
    assert torch.equal(black, torch.zeros_like(black))  # multiplicative: black stays black


# --- blur ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.4, 0.6, 0.7, 0.8, 1.0])
def test_gaussian_blur_is_skimage_gaussian(sigma):
    x = _float(IMAGES[:4])
    y = C.gaussian_blur(x, sigma, _draws(4))
    ref = ndimage.gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest",
                                  truncate=4.0)
    np.testing.assert_allclose(y.numpy(), np.clip(ref, 0, 1), atol=2e-6)
    assert ops.gaussian_kernel1d(sigma).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_defocus_disk_is_opencv_gaussian_blur_of_the_aliased_disk():
    # radius 0.3: the disk is the centre pixel alone, so cv2.GaussianBlur(3x3, sigma 0.4) leaves
    # the outer product of getGaussianKernel(3, 0.4) there
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.4 ** 2))
    g /= g.sum()
    k = ops.disk_kernel(0.3, 0.4).numpy()
    expected = np.zeros((17, 17))
    expected[7:10, 7:10] = np.outer(g, g)
    np.testing.assert_allclose(k, expected, atol=1e-7)
    for radius, alias in C.ALL["defocus_blur"].constants:
        kernel = ops.disk_kernel(radius, alias)
        assert kernel.shape == (17, 17) and kernel.sum().item() == pytest.approx(1, abs=1e-6)
    # radius 1: the aliased disk is the centre and its 4 neighbours, each 1/5
    blurred = ops.disk_kernel(1, 1e-6).numpy()
    assert blurred[8, 8] == pytest.approx(0.2) and blurred[7, 8] == pytest.approx(0.2)


def test_defocus_blur_filters_like_filter2d_with_reflect_101():
    x = _float(IMAGES[:3])
    kernel = ops.disk_kernel(1.5, 0.1)
    y = C.defocus_blur(x, (1.5, 0.1), _draws(3))
    ref = ndimage.correlate(x.double().numpy(), kernel.double().numpy()[None, None],
                            mode="mirror")
    np.testing.assert_allclose(y.numpy(), np.clip(ref, 0, 1), atol=2e-6)


def _glass_reference(img_u8: np.ndarray, offsets: list[np.ndarray], delta: int) -> np.ndarray:
    """make_cifar_c.py's loop as written, on an HWC uint8 array, with given (dx, dy) draws."""
    x = img_u8.copy()
    for off in offsets:
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                dx, dy = off[h - delta - 1, w - delta - 1]
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]  # numpy views: a copy, not a swap
    return x


@pytest.mark.parametrize("iterations", [1, 2])
def test_glass_blur_shuffle_is_the_reference_loop(iterations):
    n = 3
    offsets = [RNG.integers(-1, 1, (n, 30, 30, 2)) for _ in range(iterations)]
    draws = FixedDraws(n, integers=[torch.from_numpy(o) for o in offsets])
    # sigma 0.05: scipy's kernel radius is int(4 * 0.05 + 0.5) = 0, so no blur around it
    y = C.glass_blur(_float(IMAGES[:n]), (0.05, 1, iterations), draws)
    for i in range(n):
        ref = _glass_reference(IMAGES[i].transpose(1, 2, 0), [o[i] for o in offsets], 1)
        np.testing.assert_array_equal(C.to_uint8(y[i:i + 1])[0].numpy().transpose(1, 2, 0), ref)


def _motion_reference(img: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage written out pixel by pixel (CHW float image)."""
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    a = np.deg2rad(angle)
    offs = [(int(np.ceil(i * np.cos(a) - 0.5)), int(np.ceil(i * np.sin(a) - 0.5)))
            for i in range(width)]
    out = np.zeros_like(img)
    _, h, w = img.shape
    for y in range(h):
        for x in range(w):
            for i, (ox, oy) in enumerate(offs):
                out[:, y, x] += k[i] * img[:, min(max(y + oy, 0), h - 1),
                                           min(max(x + ox, 0), w - 1)]
    return out


@pytest.mark.parametrize("angle", [-45.0, 0.0, 17.0, 44.0])
def test_motion_blur_is_imagemagicks_line_kernel(angle):
    x = _float(IMAGES[:1])
    y = ops.motion_blur(x, 6, 1.5, torch.tensor([angle]))
    ref = _motion_reference(x[0].double().numpy(), 6, 1.5, angle)
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-5)
    flat = torch.full((1, 3, 32, 32), 0.3)  # the kernel sums to 1
    assert torch.allclose(ops.motion_blur(flat, 9, 2.5, torch.tensor([angle])), flat, atol=1e-6)


def _clipped_zoom_reference(img: np.ndarray, factor: float) -> np.ndarray:
    """make_cifar_c.py's clipped_zoom with scipy, on an HWC float array."""
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out = ndimage.zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim:trim + h, trim:trim + h]


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_zoom_blur_is_the_mean_of_scipy_zooms(severity):
    zooms = C.ALL["zoom_blur"].constants[severity - 1]
    assert zooms[0] == 1 and len(zooms) == [7, 12, 16, 21, 26][severity - 1]  # np.arange's ends
    x = _float(IMAGES[:2])
    y = C.zoom_blur(x, zooms, _draws(2))
    for i in range(2):
        img = x[i].double().numpy().transpose(1, 2, 0)
        ref = (img + sum(_clipped_zoom_reference(img, z) for z in zooms)) / (len(zooms) + 1)
        np.testing.assert_allclose(y[i].numpy().transpose(1, 2, 0), ref, atol=2e-6)


# --- weather ------------------------------------------------------------------------------------------


def test_plasma_fractal_spans_zero_to_one_and_depends_on_the_image():
    p = ops.plasma_fractal(_draws(4), 32, 2.0)
    assert p.shape == (4, 32, 32)
    assert p.amin(dim=(1, 2)).tolist() == [0.0] * 4
    assert p.amax(dim=(1, 2)).tolist() == pytest.approx([1.0] * 4)
    assert not torch.equal(p[0], p[1])


def test_fog_adds_the_fractal_and_rescales_by_the_maximum():
    x = torch.full((2, 3, 32, 32), 0.5)
    x[:, :, 0, 0] = 0.8  # the maximum
    strength, decay = C.ALL["fog"].constants[2]
    y = C.fog(x, (strength, decay), _draws(2, "fog", 3))
    layer = ops.plasma_fractal(_draws(2, "fog", 3), 32, decay)[:, None].float()
    np.testing.assert_allclose(y.numpy(), ((x + strength * layer) * 0.8 / (0.8 + strength))
                               .clamp(0, 1).numpy(), atol=1e-6)


def test_frost_layer_has_the_photographs_colour():
    # on a black image the output is c1 * ice: its mean colour over many images is the mean of
    # the five photographs' means
    n = 400
    c = C.ALL["frost"].constants[0]
    y = C.frost(torch.zeros(n, 3, 32, 32), c, _draws(n, "frost", 1)).double() * 255 / c[1]
    target = np.mean(C.FROST_MEAN, axis=0)
    np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).numpy(), target, rtol=0.05)
    within = y.std(dim=(2, 3)).mean(0).numpy()
    np.testing.assert_allclose(within, np.mean(C.FROST_STD, axis=0), rtol=0.15)


@pytest.mark.parametrize("name", ["snow", "spatter"])
def test_weather_layers_change_images_more_at_higher_severity(name):
    x = torch.from_numpy(np.full((64, 3, 32, 32), 90, np.uint8))
    change = [(C.corrupt(x, name, s, np.arange(64)).float() - 90).abs().mean().item()
              for s in (1, 3)]
    assert 0 < change[0] < change[1]


def test_spatter_mud_blends_brown_by_one_mask_that_is_zero_or_at_least_point_eight():
    # on white, y = 1 - m (1 - mud): every channel must give the same mask m
    y = C.spatter(torch.ones(50, 3, 32, 32), C.ALL["spatter"].constants[4],
                  _draws(50, "spatter", 5)).double()
    mud = torch.tensor([63, 42, 20], dtype=torch.float64).view(1, 3, 1, 1) / 255
    m = (1 - y) / (1 - mud)
    assert torch.allclose(m[:, 0], m[:, 1], atol=1e-6) and torch.allclose(m[:, 0], m[:, 2],
                                                                          atol=1e-6)
    assert (m > 0).any() and ((m == 0) | (m >= 0.8 - 1e-6)).all()


# --- colour: HSV as skimage does it, checked against colorsys --------------------------------------


def _hsv_reference(img: np.ndarray, channel: int, fn) -> np.ndarray:
    out = np.empty_like(img)
    for i in range(img.shape[1]):
        for j in range(img.shape[2]):
            hsv = list(colorsys.rgb_to_hsv(*img[:, i, j]))
            hsv[channel] = min(max(fn(hsv[channel]), 0.0), 1.0)
            out[:, i, j] = colorsys.hsv_to_rgb(*hsv)
    return out


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_brightness_raises_hsv_value(severity):
    c = C.ALL["brightness"].constants[severity - 1]
    x = _float(IMAGES[:1]).double()
    y = C.brightness(x, c, _draws(1))
    ref = _hsv_reference(x[0].numpy(), 2, lambda v: v + c)
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-9)
    grey = C.brightness(torch.full((1, 3, 2, 2), 0.5), c, _draws(1))
    assert torch.allclose(grey, torch.full_like(grey, 0.5 + c))  # a grey's value is itself


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_saturate_scales_hsv_saturation(severity):
    a, b = C.ALL["saturate"].constants[severity - 1]
    x = _float(IMAGES[:1]).double()
    y = C.saturate(x, (a, b), _draws(1))
    ref = _hsv_reference(x[0].numpy(), 1, lambda s: s * a + b)
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-9)
    # by hand: (0.8, 0.4, 0.4) has V 0.8, S 0.5; S' = 0.5 a + b gives G = B = 0.8 (1 - S')
    red = C.saturate(torch.tensor([0.8, 0.4, 0.4]).view(1, 3, 1, 1), (a, b), _draws(1))
    s2 = min(0.5 * a + b, 1.0)
    assert red.flatten().tolist() == pytest.approx([0.8, 0.8 * (1 - s2), 0.8 * (1 - s2)])


def test_hsv_round_trip_and_ties():
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.2, 0.2, 0.2], [0, 0, 0]]).T
    x = x.reshape(1, 3, 1, 4)
    assert torch.allclose(ops.hsv_to_rgb(ops.rgb_to_hsv(x)), x)
    assert ops.rgb_to_hsv(x)[0, 0, 0].tolist() == pytest.approx([1 / 6, 0.5, 0, 0])


# --- digital ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_contrast_keeps_each_channels_mean(severity):
    c = C.ALL["contrast"].constants[severity - 1]
    x = 0.25 + 0.5 * _float(IMAGES[:4])  # no clipping: (x - m) c + m stays inside 0-1
    y = C.contrast(x, c, _draws(4))
    np.testing.assert_allclose(y.mean(dim=(2, 3)).numpy(), x.mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose((y - y.mean(dim=(2, 3), keepdim=True)).numpy(),
                               (c * (x - x.mean(dim=(2, 3), keepdim=True))).numpy(), atol=1e-6)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_pixelate_is_pillows_box_resize_bit_exact(severity):
    c = C.ALL["pixelate"].constants[severity - 1]
    side = [30, 28, 27, 24, 20][severity - 1]  # int(32 c)
    assert int(32 * c) == side
    y = C.corrupt(IMAGES[:6], "pixelate", severity, np.arange(6)).numpy()
    for i in range(6):
        img = Image.fromarray(IMAGES[i].transpose(1, 2, 0))
        ref = img.resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
        np.testing.assert_array_equal(y[i].transpose(1, 2, 0), np.asarray(ref))


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_jpeg_compression_uses_the_reference_quality(severity):
    quality = [80, 65, 58, 50, 40][severity - 1]
    assert C.ALL["jpeg_compression"].constants[severity - 1] == quality
    y = C.corrupt(IMAGES[:2], "jpeg_compression", severity, np.arange(2)).numpy()
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(IMAGES[i].transpose(1, 2, 0)).save(buf, "JPEG", quality=quality)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        np.testing.assert_array_equal(y[i].transpose(1, 2, 0), ref)


def test_bilinear_matches_scipy_map_coordinates():
    x = _float(IMAGES[:2]).double()
    ys = torch.from_numpy(RNG.uniform(-5, 37, (2, 32, 32)))
    xs = torch.from_numpy(RNG.uniform(-5, 37, (2, 32, 32)))
    for mode in ("reflect", "mirror", "nearest"):
        y = ops.bilinear(x, ys, xs, mode)
        for i in range(2):
            for ch in range(3):
                ref = ndimage.map_coordinates(x[i, ch].numpy(), [ys[i].numpy(), xs[i].numpy()],
                                              order=1, mode=mode)
                np.testing.assert_allclose(y[i, ch].numpy(), ref, atol=1e-9, err_msg=mode)


def test_elastic_transform_without_jitter_or_displacement_is_the_identity():
    x = _float(IMAGES[:2])
    y = C.elastic_transform(x, (0.0, 0.0, 2.56), FixedDraws(2, uniform=0.0))
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-5)
    moved = C.corrupt(IMAGES[:2], "elastic_transform", 1, [0, 1])
    assert not torch.equal(moved, torch.from_numpy(IMAGES[:2]))


def test_elastic_affine_moves_the_three_points_as_drawn():
    # with every jitter +2.56 (U(-c, c) pinned high), the affine is a shift by (2.56, 2.56):
    # the output at (row, col) samples the input at (row - 2.56, col - 2.56)
    x = _float(IMAGES[:1]).double()
    y = C.elastic_transform(x, (0.0, 0.0, 2.56), FixedDraws(1, uniform=2.56))
    rr, cc = np.meshgrid(np.arange(32) - 2.56, np.arange(32) - 2.56, indexing="ij")
    for ch in range(3):
        ref = ndimage.map_coordinates(x[0, ch].numpy(), [rr, cc], order=1, mode="mirror")
        np.testing.assert_allclose(y[0, ch].numpy(), np.clip(ref, 0, 1), atol=1e-5)


# --- the public function: seeding, shapes, errors ----------------------------------------------------


@pytest.mark.parametrize("name", list(C.ALL))
def test_same_image_same_corruption_whatever_the_batch(name):
    idx = np.arange(100, 112)
    whole = C.corrupt(IMAGES[:12], name, 3, idx)
    perm = RNG.permutation(12)
    shuffled = C.corrupt(IMAGES[:12][perm], name, 3, idx[perm])
    assert torch.equal(shuffled, whole[perm])
    assert torch.equal(C.corrupt(IMAGES[5:6], name, 3, idx[5:6]), whole[5:6])
    assert whole.dtype == torch.uint8 and whole.shape == (12, 3, 32, 32)


def test_the_draws_depend_on_index_corruption_and_severity():
    img = np.repeat(IMAGES[:1], 2, axis=0)
    a = C.corrupt(img, "gaussian_noise", 3, [7, 8])
    assert not torch.equal(a[0], a[1])  # same pixels, other index
    assert not torch.equal(C.corrupt(img[:1], "gaussian_noise", 4, [7]), a[:1])
    assert ops.draw_seed(7, "gaussian_noise", 3) != ops.draw_seed(7, "shot_noise", 3)


def test_registry_names_families_and_severities():
    assert list(C.CORRUPTIONS) == [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression"]
    assert list(C.HELD_OUT) == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert [c.family for c in C.CORRUPTIONS.values()] == \
        ["noise"] * 3 + ["blur"] * 4 + ["weather"] * 4 + ["digital"] * 4
    assert all(len(c.constants) == 5 for c in C.ALL.values())


def test_bad_input_is_one_clear_error():
    with pytest.raises(CifarlensError, match="unknown corruption"):
        C.corrupt(IMAGES[:1], "rain", 1, [0])
    with pytest.raises(CifarlensError, match="severity"):
        C.corrupt(IMAGES[:1], "fog", 6, [0])
    with pytest.raises(CifarlensError, match="uint8"):
        C.corrupt(IMAGES[:1].astype(np.float32), "fog", 1, [0])
    with pytest.raises(CifarlensError, match="indices"):
        C.corrupt(IMAGES[:2], "fog", 1, [0])


def test_to_uint8_truncates_as_the_reference():
    x = torch.tensor([0.0, 200 / 255, 100.7 / 255, 1.2, -0.1]).view(1, 1, 1, 5)
    assert C.to_uint8(x).flatten().tolist() == [0, 200, 100, 255, 0]
