"""Batched image operations behind the corruptions, each written to match the library call that
make_cifar_c.py makes (scipy.ndimage, OpenCV, Pillow, ImageMagick, scikit-image), so that one
torch implementation runs on the CPU or the GPU for a whole batch.

Images are float NCHW tensors on the 0-1 scale unless a function says otherwise. Every random
draw comes from `Draws`: one generator per image, seeded by (image index, corruption,
severity), so an image is corrupted the same way whatever batch it is in.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# --- random draws: one seeded generator per image ------------------------------------------------


class Draws:
    """Per-image random streams for one (corruption, severity).

    Each image has its own CPU `torch.Generator` seeded from a hash of (image index, corruption,
    severity); draws are made on the CPU in a fixed order and moved to `device`, so an image's
    corruption is the same in any batch and on any device. Measured on the 2-core CPU: 18 ms per
    1,000 images x 3,072 uniforms, against 240 ms for a counter-based integer hash in torch
    (bench/corruption_cost.py, `rng`), so the per-image loop is the cheaper of the two here.
    """

    def __init__(self, indices: np.ndarray, corruption: str, severity: int,
                 device: torch.device) -> None:
        self.device = device
        self.gens = [torch.Generator().manual_seed(draw_seed(int(i), corruption, severity))
                     for i in np.asarray(indices).ravel()]

    def __len__(self) -> int:
        return len(self.gens)

    def _each(self, fn) -> torch.Tensor:
        return torch.stack([fn(g) for g in self.gens]).to(self.device)

    def uniform(self, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0
                ) -> torch.Tensor:
        """(N, *shape) float32, uniform on [low, high)."""
        return low + (high - low) * self._each(lambda g: torch.rand(shape, generator=g))

    def normal(self, shape: tuple[int, ...], loc: float = 0.0, scale: float = 1.0
               ) -> torch.Tensor:
        return loc + scale * self._each(lambda g: torch.randn(shape, generator=g))

    def integers(self, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
        """(N, *shape) int64 on [low, high), as numpy's randint(low, high)."""
        return self._each(lambda g: torch.randint(low, high, shape, generator=g))

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        """Poisson counts for (N, ...) rates (drawn on the CPU in float64)."""
        r = rates.detach().to("cpu", torch.float64)
        return torch.stack([torch.poisson(r[i], generator=g) for i, g in enumerate(self.gens)]
                           ).to(self.device, rates.dtype)


def draw_seed(index: int, corruption: str, severity: int) -> int:
    """A 63-bit seed for one image's draws: a hash, so nearby indices get unrelated streams."""
    digest = hashlib.blake2b(f"{index}/{corruption}/{severity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# --- borders and separable filters (scipy.ndimage and OpenCV conventions) -----------------------


def border_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer positions (any range) into [0, n) as a border mode extends an axis:
    "reflect" (scipy: d c b a | a b c d | d c b a), "mirror" (scipy's mirror, OpenCV's
    BORDER_REFLECT_101: d c b | a b c d | c b a), "nearest" (edge pixel repeated)."""
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        k = torch.remainder(i, 2 * n)
        return torch.where(k < n, k, 2 * n - 1 - k)
    if mode == "mirror":
        k = torch.remainder(i, 2 * n - 2)
        return torch.where(k < n, k, 2 * n - 2 - k)
    raise ValueError(f"unknown border mode {mode!r}")


def _pad(x: torch.Tensor, before: int, after: int, dim: int, mode: str) -> torch.Tensor:
    n = x.shape[dim]
    idx = border_index(torch.arange(-before, n + after, device=x.device), n, mode)
    return x.index_select(dim, idx)


def correlate(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """2-D correlation of every channel with one odd-sized kernel (kh, kw), anchored at its
    centre, the border extended by `mode` (OpenCV's filter2D with BORDER_REFLECT_101 is
    mode="mirror")."""
    kh, kw = kernel.shape
    x = _pad(_pad(x, kh // 2, kh // 2, 2, mode), kw // 2, kw // 2, 3, mode)
    c = x.shape[1]
    w = kernel.to(x.device, x.dtype).expand(c, 1, kh, kw)
    return F.conv2d(x, w, groups=c)


def separable(x: torch.Tensor, k1d: torch.Tensor, mode: str) -> torch.Tensor:
    """The same 1-D kernel along rows, then columns (a Gaussian filter)."""
    if len(k1d) == 1:
        return x * float(k1d[0])
    x = correlate(x, k1d.view(1, -1), mode)
    return correlate(x, k1d.view(-1, 1), mode)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5), normalised
    (skimage.filters.gaussian calls it; truncate 4 unless the call says otherwise)."""
    r = int(truncate * float(sigma) + 0.5)
    if r == 0:
        return torch.ones(1, dtype=torch.float64)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * x * x / (float(sigma) ** 2))
    return w / w.sum()


def gaussian(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
             ) -> torch.Tensor:
    """skimage.filters.gaussian(x, sigma, multichannel=True): each channel, scipy's kernel,
    skimage's default border mode "nearest"."""
    return separable(x, gaussian_kernel1d(sigma, truncate), mode)


def cv_gaussian_kernel1d(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0 (float64)."""
    x = np.arange(ksize) - (ksize - 1) / 2
    w = np.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """make_cifar_c.py's `disk`: a normalised aliased disk on a 17x17 grid (radius <= 8; wider
    otherwise), antialiased by cv2.GaussianBlur (3x3 or 5x5, BORDER_REFLECT_101), in float32."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    d /= d.sum()
    g = cv_gaussian_kernel1d(ksize, alias_blur).astype(np.float32)
    p = ksize // 2
    d = np.pad(d, p, mode="reflect")  # numpy's "reflect" is OpenCV's BORDER_REFLECT_101
    rows = sum(g[i] * d[:, i:i + 2 * half + 1] for i in range(ksize))
    out = sum(g[i] * rows[i:i + 2 * half + 1, :] for i in range(ksize))
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


# --- resampling as matrices ------------------------------------------------------------------------


@lru_cache(maxsize=64)
def clipped_zoom_matrix(n: int, factor: float) -> torch.Tensor:
    """(n, n) float64 matrix A with A @ X @ A.T == make_cifar_c.py's clipped_zoom(X, factor):
    crop the central ceil(n / factor) pixels, scipy.ndimage.zoom(order=1) them to
    round(crop * factor) (scipy maps output i to input i * (crop - 1) / (out - 1)), keep the
    central n."""
    ch = int(math.ceil(n / factor))
    top = (n - ch) // 2
    out_n = int(round(ch * factor))
    trim = (out_n - n) // 2
    a = np.zeros((n, n))
    for row, i in enumerate(range(trim, trim + n)):
        pos = i * (ch - 1) / (out_n - 1) if out_n > 1 else 0.0
        p0 = min(int(math.floor(pos)), ch - 1)
        f = pos - p0
        a[row, top + p0] += 1 - f
        if f > 0:
            a[row, top + min(p0 + 1, ch - 1)] += f
    return torch.from_numpy(a)


def apply_matrix(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A @ X @ A.T for every channel of every image."""
    a = a.to(x.device, x.dtype)
    return a @ x @ a.T


# Pillow's 8-bit resampling: coefficients in fixed point with 22 fractional bits, each pass
# rounded to uint8 (libImaging/Resample.c: PRECISION_BITS = 32 - 8 - 2).
_PIL_BITS = 22


@lru_cache(maxsize=32)
def pil_box_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) float64 matrix of Pillow's BOX filter coefficients in fixed point, computed as
    libImaging/Resample.c's precompute_coeffs and normalize_coeffs_8bpc do."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    k = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = np.array([1.0 if -0.5 < (x + 0.5 - center) / filterscale <= 0.5 else 0.0
                      for x in range(xmin, xmax)])
        if w.sum():
            w = w / w.sum()
        k[xx, xmin:xmax] = np.floor(w * (1 << _PIL_BITS) + 0.5)
    return torch.from_numpy(k)


def pil_box_resize(x_u8: torch.Tensor, size: int) -> torch.Tensor:
    """Image.resize((size, size), Image.BOX) of uint8 NCHW images, bit-exact: the horizontal
    pass first, each pass rounded to uint8 as Pillow's integer arithmetic does (float64 holds
    these sums exactly: < 2^40)."""
    x = x_u8.to(torch.float64)

    def one_pass(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = t @ k.T.to(t.device) + (1 << (_PIL_BITS - 1))
        return torch.floor(s / (1 << _PIL_BITS)).clamp(0, 255)

    x = one_pass(x, pil_box_matrix(x.shape[3], size))  # along each row
    x = one_pass(x.transpose(2, 3), pil_box_matrix(x.shape[2], size)).transpose(2, 3)
    return x.to(torch.uint8)


# --- geometric sampling ------------------------------------------------------------------------------


def gather_pixels(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x[n, :, rows[n, i, j], cols[n, i, j]] for integer (N, H, W) positions inside the image."""
    n, c, h, w = x.shape
    flat = (rows * w + cols).reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, h * w).gather(2, flat).reshape(n, c, *rows.shape[1:])


def bilinear(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """Linear interpolation of every channel at float positions (N, H, W) (row ys, column xs),
    the image extended beyond its border by `mode` (as scipy's map_coordinates(order=1) or
    OpenCV's INTER_LINEAR sample)."""
    h, w = x.shape[2:]
    y0, x0 = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0).unsqueeze(1), (xs - x0).unsqueeze(1)
    y0, x0 = y0.long(), x0.long()
    r0, r1 = border_index(y0, h, mode), border_index(y0 + 1, h, mode)
    c0, c1 = border_index(x0, w, mode), border_index(x0 + 1, w, mode)
    top = gather_pixels(x, r0, c0) * (1 - fx) + gather_pixels(x, r0, c1) * fx
    bottom = gather_pixels(x, r1, c0) * (1 - fx) + gather_pixels(x, r1, c1) * fx
    return top * (1 - fy) + bottom * fy


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor
                ) -> torch.Tensor:
    """ImageMagick's MotionBlurImage (MagickCore/effect.c) per image: width 2 ceil(radius) + 1
    taps with weights exp(-i^2 / 2 sigma^2) (normalised) at offsets
    (ceil(i cos a - 0.5), ceil(i sin a - 0.5)) along one side, edge pixels repeated beyond the
    border. `angle_deg` is (N,): one angle per image."""
    n, _, h, w = x.shape
    width = 2 * int(math.ceil(radius)) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i * i) / (2 * sigma * sigma))
    k = (k / k.sum()).tolist()
    a = torch.deg2rad(angle_deg.to("cpu", torch.float64))
    rows0 = torch.arange(h).view(1, h, 1).expand(n, h, w)
    cols0 = torch.arange(w).view(1, 1, w).expand(n, h, w)
    out = torch.zeros_like(x)
    for j in range(width):
        dx = torch.ceil(j * torch.cos(a) - 0.5).long().view(n, 1, 1)
        dy = torch.ceil(j * torch.sin(a) - 0.5).long().view(n, 1, 1)
        rows = (rows0 + dy).clamp(0, h - 1).to(x.device)
        cols = (cols0 + dx).clamp(0, w - 1).to(x.device)
        out = out + k[j] * gather_pixels(x, rows, cols)
    return out


# --- colour --------------------------------------------------------------------------------------------


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on NCHW images (channels H, S, V on 0-1); where two channels tie
    for the maximum, blue wins over green over red, as skimage assigns them in that order."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(dim=1).values
    delta = v - x.min(dim=1).values
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, 1, v))
    h = (g - b) / safe
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on NCHW images."""
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = torch.remainder(hi, 6).long()
    choices = torch.stack([torch.stack(c, 1) for c in
                           [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]])
    idx = hi.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return choices.gather(0, idx).squeeze(0)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(x, COLOR_RGB2GRAY) for float images: 0.299 R + 0.587 G + 0.114 B, (N,1,H,W)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


# --- the plasma fractal (fog, and the frost stand-in) --------------------------------------------------


def plasma_fractal(draws: Draws, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """make_cifar_c.py's plasma_fractal (diamond-square, from FLHerne/mapgen) for every image at
    once: (N, mapsize, mapsize) float64 on 0-1. Each mean gets `wibble * U(-wibble, wibble)`, as
    the reference's `wibbledmean` adds."""
    n = len(draws)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        u = draws.uniform(tuple(a.shape[1:]), -wibble, wibble).to("cpu", torch.float64)
        return a / 4 + wibble * u

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]  # the squares' corners
        acc = corners + torch.roll(corners, -1, 1)
        acc = acc + torch.roll(acc, -1, 2)
        m[:, half::step, half::step] = wibbled(acc)
        dr = m[:, half::step, half::step]  # then the diamonds
        ul = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2))
        m[:, half::step, 0::step] = wibbled(dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1))
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True)).to(draws.device)
