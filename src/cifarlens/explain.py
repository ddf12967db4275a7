"""Grad-CAM explanations, their faithfulness checks and their figures.

All explanations run in fp32 with autocast disabled: bf16 gradients at a 4x4 layer are too coarse
to compare maps across images and models, and explaining costs one forward plus a cheap partial
backward, so fp32 is affordable.

Maps are raw Grad-CAM values (never min-max rescaled per image), so they stay comparable across
images and models; only the figures rescale, and they say how.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._io import save_figure
from .errors import CifarlensError

TargetsLike = Tensor | np.ndarray | Sequence[int] | int


# --------------------------------------------------------------------------- layer choice


def find_cam_layer(model: nn.Module) -> nn.Module:
    """The layer to explain: `model.cam_layer` if the model names one, else its last Conv2d.

    "Last" is in `model.modules()` order (registration order), which is execution order for the
    usual Sequential-style CNNs; models where it is not should set `cam_layer`.
    """
    layer = getattr(model, "cam_layer", None)
    if isinstance(layer, str):
        try:
            layer = model.get_submodule(layer)
        except AttributeError as e:
            raise CifarlensError(f"model.cam_layer names no submodule: {e}") from None
    if layer is not None:
        if not isinstance(layer, nn.Module):
            raise CifarlensError(
                f"model.cam_layer must be an nn.Module, got {type(layer).__name__}"
            )
        return layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CifarlensError(
            f"{type(model).__name__} has no Conv2d layer and no cam_layer: nothing to explain"
        )
    return convs[-1]


# --------------------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own flag back (not just the root's)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def _as_images(images: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise CifarlensError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise CifarlensError(
            f"images must be normalized float tensors, got dtype {x.dtype}"
        )
    return x


def _as_targets(targets: TargetsLike, n: int, name: str = "targets") -> Tensor:
    if isinstance(targets, int | np.integer):
        return torch.full((n,), int(targets), dtype=torch.long)
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets)
    if t.ndim != 1 or len(t) != n:
        raise CifarlensError(f"{name} must hold one class index per image ({n}), got shape "
                             f"{tuple(t.shape)}")
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if torch.is_floating_point(t) or t.dtype == torch.bool:
        raise CifarlensError(f"{name} must be integer class indices, got dtype {t.dtype}")
    return t.to(torch.long).cpu()


def _check_targets_range(t: Tensor, n_classes: int, name: str) -> None:
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise CifarlensError(
            f"{name} must lie in [0, {n_classes}) for a model with {n_classes} outputs, "
            f"got range [{int(t.min())}, {int(t.max())}]"
        )


# --------------------------------------------------------------------------- Grad-CAM


def gradcam(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    layer: nn.Module | None = None,
    *,
    batch_size: int = 256,
    upsample: bool = True,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the raw target-class logit: (N, H, W) float32 on CPU.

    alpha_k = spatial mean of d logit_target / d A_k,  map = ReLU(sum_k alpha_k A_k), where A is
    the output of `layer` (default: `find_cam_layer(model)`). With `upsample` the map is resized
    bilinearly (align_corners=False) to the input size, otherwise it stays at the layer's
    resolution. No per-image rescaling. If `layer` runs several times in one forward pass, its
    last call is explained.
    """
    return _gradcam_multi(model, images, [targets], layer, batch_size, upsample, ["targets"])[0]


def gradcam_pair(
    model: nn.Module,
    images: Tensor,
    pred: TargetsLike,
    true: TargetsLike,
    layer: nn.Module | None = None,
    *,
    batch_size: int = 256,
    upsample: bool = True,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM for the predicted and the true class from ONE forward pass per batch.

    Equal to `(gradcam(..., pred), gradcam(..., true))`, at about half the cost.
    """
    maps = _gradcam_multi(model, images, [pred, true], layer, batch_size, upsample,
                          ["pred", "true"])
    return maps[0], maps[1]


def _gradcam_multi(
    model: nn.Module,
    images: Tensor,
    target_sets: list[TargetsLike],
    layer: nn.Module | None,
    batch_size: int,
    upsample: bool,
    names: list[str],
) -> list[Tensor]:
    # Own implementation, not captum's LayerGradCam (kept in the tests as the independent check),
    # for two measured reasons. CPU seconds (2 shared cores, fp32, batch 256) for 2048 random
    # images through the 10.46M-param VGG of models.py, interleaved per batch against load noise
    # (`CIFARLENS_BENCH=1 pytest tests/test_explain.py -k benchmark -s`):
    #   one target:           captum 20.8 s, own 18.3 s   (-12%: alone, not a reason)
    #   pred + true (a pair): captum 39.6 s (2 calls), own 18.8 s (1 forward, 2 grads: 2.1x)
    #   peak RSS at batch 256 (own process each): captum 1120 MiB, own 638 MiB, bare no-grad
    #   forward 608 MiB: the pre-layer forward runs without a graph.
    # Captum's result also keeps the whole forward graph alive until .detach().
    x_all = _as_images(images)
    if batch_size < 1:
        raise CifarlensError(f"batch_size must be >= 1, got {batch_size}")
    n, _, h_in, w_in = x_all.shape
    tsets = [_as_targets(t, n, nm) for t, nm in zip(target_sets, names, strict=True)]
    if layer is None:
        layer = find_cam_layer(model)
    if not any(m is layer for m in model.modules()):
        raise CifarlensError(f"layer {type(layer).__name__} is not a submodule of the model")
    device = _device_of(model)
    outs: list[list[Tensor]] = [[] for _ in tsets]
    with _eval_mode(model), torch.autocast(device.type, enabled=False):
        for start in range(0, n, batch_size):
            x = x_all[start:start + batch_size].to(device=device, dtype=torch.float32)
            act, logits = _forward_capture(model, layer, x)
            for k, t_all in enumerate(tsets):
                _check_targets_range(t_all, logits.shape[1], names[k])
                t = t_all[start:start + batch_size].to(device)
                # Summing over the batch is exact: in eval mode image i's logit depends on image
                # i's activation only, so d(sum)/dA_i = d logit_i / dA_i. enable_grad: the
                # caller may be under no_grad, where gather() would drop the graph.
                with torch.enable_grad():
                    selected = logits.gather(1, t[:, None]).sum()
                (grad,) = torch.autograd.grad(selected, act, retain_graph=k < len(tsets) - 1)
                alpha = grad.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((alpha * act.detach()).sum(dim=1, keepdim=True))
                if upsample:
                    cam = F.interpolate(cam, size=(h_in, w_in), mode="bilinear",
                                        align_corners=False)
                outs[k].append(cam[:, 0].float().cpu())
            del act, logits
    if n == 0:
        return [torch.zeros((0, h_in, w_in) if upsample else (0, 0, 0)) for _ in tsets]
    return [torch.cat(o) for o in outs]


def _forward_capture(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run the model once; return (layer output as a grad leaf, logits with a graph to it).

    Everything before `layer` runs under no_grad and the hook switches recording on for the rest,
    so only the head's graph is kept: about half the peak memory of a fully recorded forward.
    """
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Tensor:
        if not isinstance(out, Tensor) or out.ndim != 4:
            raise CifarlensError(
                f"Grad-CAM needs a layer with a (N, C, h, w) tensor output; "
                f"{type(layer).__name__} gave {type(out).__name__} "
                f"{tuple(out.shape) if isinstance(out, Tensor) else ''}"
            )
        # own copy: `out` may share storage with tensors the model later changes in place
        act = out.detach().to(torch.float32, copy=True).requires_grad_(True)
        captured.append(act)
        torch.set_grad_enabled(True)  # undone by the no_grad block's exit, even on error
        # a clone goes downstream so in-place ops there (ReLU(inplace=True)) cannot alter `act`
        return act.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(x)
    except (RuntimeError, ValueError) as e:
        if tuple(x.shape[1:]) == (3, 32, 32):
            raise  # CIFAR-shaped input: the model's own error, not ours to reword
        # e.g. a 64x64 or 1-channel batch for a 32x32 RGB model
        raise CifarlensError(f"the model cannot take images of shape {tuple(x.shape[1:])}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        handle.remove()
    if not captured:
        raise CifarlensError(f"layer {type(layer).__name__} did not run in the forward pass")
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.grad_fn is None:
        raise CifarlensError(
            "model must return (N, n_classes) logits that depend on the explained layer"
        )
    return captured[-1], logits


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


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    maps: Tensor,
    *,
    steps: int = 32,
    batch_size: int = 256,
    baseline: str = "blur",
    blur_sigma: float = 2.0,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE) of the target-class softmax.

    Pixels are ranked by the map (descending; ties by row-major pixel index). Deletion replaces
    the top fraction f of pixels (all channels) with the baseline, for f = 0, 1/steps, ..., 1;
    insertion starts from the baseline and puts image pixels back in the same order. Baseline
    "zero" is 0 in normalized space (the dataset mean); "blur" is a Gaussian-blurred copy of the
    image (sigma `blur_sigma` px). A faithful map has a LOW deletion AUC and a HIGH insertion AUC.
    Costs 2 * (steps + 1) forward passes per image; `batch_size` bounds the model's batch.

    Returns deletion and insertion (N, steps+1), their trapezoid AUCs over f in [0, 1] (N,),
    and fractions (steps+1,).
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
            base = _gaussian_blur(x, blur_sigma) if baseline == "blur" else torch.zeros_like(x)
            # (b, steps+1, 1, h, w): True where the pixel is among the top counts[k]
            top = (rank[sl].to(device).view(b, 1, 1, h, w)
                   < counts.to(device).view(1, -1, 1, 1, 1))
            xs, bs = x[:, None], base[:, None]
            t = t_all[sl].to(device).repeat_interleave(steps + 1)
            for out, variants in ((dele, torch.where(top, bs, xs)),
                                  (ins, torch.where(top, xs, bs))):
                logits = model(variants.reshape(b * (steps + 1), c, h, w))
                _check_targets_range(t_all, logits.shape[1], "targets")
                p = logits.float().softmax(dim=1).gather(1, t[:, None])[:, 0]
                out[sl] = p.view(b, steps + 1).double().cpu().numpy()

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


# --------------------------------------------------------------------------- figures


_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def _plain(s: object, max_len: int = 40) -> str:
    """Label text safe to draw: control/format characters (ANSI escapes, bidi overrides) dropped,
    whitespace runs collapsed, long names shortened. Drawn with parse_math=False, so `$` stays `$`.
    """
    text = _ANSI.sub("", str(s))  # whole escape sequences, not just their ESC byte
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    text = " ".join(text.split())
    return text if len(text) <= max_len else text[: max_len - 1] + "\u2026"


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
    import matplotlib

    from .figures import new_figure

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

    scale = max(1, round(128 / max(h, w)))  # nearest-neighbour upscale to ~128 px: crisp pixels
    fig, axes = new_figure(n, 5, figsize=(5 * 1.55, n * 1.75 + 0.5), squeeze=False)
    cmap = matplotlib.colormaps["inferno"]
    for i in range(n):
        img = np.clip(imgs[i], 0, 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
        vmax = float(max(mp[i].max(), mt[i].max()))
        norm = vmax if vmax > 0 else 1.0
        pred, true = _plain(pred_names[i]), _plain(true_names[i])
        row = axes[i]
        row[0].imshow(img, interpolation="nearest")
        row[0].set_title(f"{_plain(titles[i], 60)}\n{pred} ({float(confidences[i]):.0%})",
                         fontsize=7, **_TEXT)
        for j, (m, head) in enumerate(((mp[i], f"why it said {pred}"),
                                       (mt[i], f"evidence for {true}"))):
            big = (m / norm).repeat(scale, 0).repeat(scale, 1)
            row[1 + 2 * j].imshow(big, cmap=cmap, vmin=0, vmax=1, interpolation="bilinear")
            row[1 + 2 * j].set_title(head, fontsize=7, **_TEXT)
            row[2 + 2 * j].imshow(img, interpolation="nearest")
            row[2 + 2 * j].imshow(big, cmap=cmap, vmin=0, vmax=1, alpha=0.5,
                                  interpolation="bilinear")
            row[2 + 2 * j].set_title("overlay" + (" (no positive evidence)" if vmax <= 0 else ""),
                                     fontsize=7, **_TEXT)
        for ax in row:
            ax.set_axis_off()
    sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap)
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=min(1.0, 3 / n) if n > 3 else 0.9,
                      pad=0.01)
    cb.set_label("Grad-CAM / max of the row's two maps (pred and true share one scale)",
                 fontsize=7)
    save_figure(fig, path)


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

    from .figures import COLORS, new_figure

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
