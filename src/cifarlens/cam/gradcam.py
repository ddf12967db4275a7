"""The Grad-CAM method (Selvaraju et al. 2017): which layer, and the maps.

Kept apart from the measures of a map's quality (`cam.quality`), the figures (`cam.figures`)
and the `cifarlens explain` stage (`stages.explain`), as pytorch-grad-cam keeps `grad_cam.py`
apart from its `metrics/` and `utils/image.py`. `cifarlens.gradcam` and `cifarlens.gradcam_pair`
are these functions.

All explanations run in fp32 with autocast disabled: bf16 gradients at a 4x4 layer are too coarse
to compare maps across images and models, and explaining costs one forward plus a cheap partial
backward, so fp32 is affordable.

Maps are raw Grad-CAM values (never min-max rescaled per image), so they stay comparable across
images and models; only the figures rescale, and they say how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifarlens.errors import CifarlensError

__all__ = ["find_cam_layer", "gradcam", "gradcam_pair", "layer_name", "resolve_layer",
           "INTERPOLATION", "LayerLike", "TargetsLike", "resize_maps"]

TargetsLike = Tensor | np.ndarray | Sequence[int] | int
LayerLike = nn.Module | str | None

# How a map is resized from the layer's grid to pixels, here and in every figure (cam.figures).
INTERPOLATION = "bilinear"


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
    targets: TargetsLike | None = None,
    layer: LayerLike = None,
    *,
    batch_size: int = 256,
    upsample: bool = True,
    progress: Callable[[int], object] | None = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the raw target-class logit: (N, H, W) float32 on CPU.

    alpha_k = spatial mean of d logit_target / d A_k,  map = ReLU(sum_k alpha_k A_k), where A is
    the output of `layer`. `targets`: one class index per image (or one int for all); None
    explains each image's predicted class (the argmax of the same forward pass), as
    pytorch-grad-cam does. `layer`: a module of `model`, its name as in `model.named_modules()`
    (e.g. "features.10", like the CLI's --layer), or None for `find_cam_layer(model)`. With
    `upsample` the map is resized bilinearly (align_corners=False) to the input size, otherwise
    it stays at the layer's resolution. No per-image rescaling. If `layer` runs several times in
    one forward pass, its last call is explained. `progress`, if given, is called with the number
    of images after each batch (e.g. a tqdm bar's `update`).
    """
    return _gradcam_multi(model, images, [targets], layer, batch_size, upsample, ["targets"],
                          progress)[0]


def gradcam_pair(
    model: nn.Module,
    images: Tensor,
    pred: TargetsLike | None,
    true: TargetsLike,
    layer: LayerLike = None,
    *,
    batch_size: int = 256,
    upsample: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM for the predicted and the true class from ONE forward pass per batch.

    Equal to `(gradcam(..., pred), gradcam(..., true))`, at about half the cost; `pred=None`
    takes the model's own prediction.
    """
    maps = _gradcam_multi(model, images, [pred, true], layer, batch_size, upsample,
                          ["pred", "true"], progress)
    return maps[0], maps[1]


def _gradcam_multi(
    model: nn.Module,
    images: Tensor,
    target_sets: list[TargetsLike | None],
    layer: LayerLike,
    batch_size: int,
    upsample: bool,
    names: list[str],
    progress: Callable[[int], object] | None = None,
) -> list[Tensor]:
    # Own implementation, not captum's LayerGradCam (kept in the tests as the independent check),
    # for two measured reasons. CPU seconds (2 shared cores, fp32, batch 256) for 2048 random
    # images through the 10.46M-param VGG of training/models.py, interleaved per batch against load noise
    # (`CIFARLENS_BENCH=1 pytest tests/cam/test_explain.py -k benchmark -s`):
    #   one target:           captum 20.8 s, own 18.3 s   (-12%: alone, not a reason)
    #   pred + true (a pair): captum 39.6 s (2 calls), own 18.8 s (1 forward, 2 grads: 2.1x)
    #   peak RSS at batch 256 (own process each): captum 1120 MiB, own 638 MiB, bare no-grad
    #   forward 608 MiB: the pre-layer forward runs without a graph.
    # Captum's result also keeps the whole forward graph alive until .detach().
    x_all = _as_images(images)
    if batch_size < 1:
        raise CifarlensError(f"batch_size must be >= 1, got {batch_size}")
    n, _, h_in, w_in = x_all.shape
    # None: the predicted class, taken per batch from the forward pass that is explained
    tsets = [None if t is None else _as_targets(t, n, nm)
             for t, nm in zip(target_sets, names, strict=True)]
    if not isinstance(layer, nn.Module):
        layer = resolve_layer(model, layer)
    if not any(m is layer for m in model.modules()):
        raise CifarlensError(f"layer {type(layer).__name__} is not a submodule of the model")
    device = _device_of(model)
    outs: list[list[Tensor]] = [[] for _ in tsets]
    with _eval_mode(model), torch.autocast(device.type, enabled=False):
        for start in range(0, n, batch_size):
            x = x_all[start:start + batch_size].to(device=device, dtype=torch.float32)
            act, logits = _forward_capture(model, layer, x)
            for k, t_all in enumerate(tsets):
                if t_all is None:
                    t = logits.detach().argmax(dim=1)
                else:
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
                    cam = F.interpolate(cam, size=(h_in, w_in), mode=INTERPOLATION,
                                        align_corners=False)
                outs[k].append(cam[:, 0].float().cpu())
            del act, logits
            if progress is not None:
                progress(len(x))
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


def resize_maps(maps: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor:
    """(N, h, w) or (h, w) maps resized to `size` exactly as `gradcam(upsample=True)` does it
    (bilinear, align_corners=False); float32 on CPU, same leading shape."""
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, Tensor) else maps)
    m = m.detach().to("cpu", torch.float32)
    if m.ndim not in (2, 3):
        raise CifarlensError(f"maps must be (H, W) or (N, H, W), got shape {tuple(m.shape)}")
    four = m.reshape(-1, 1, *m.shape[-2:])
    out = F.interpolate(four, size=tuple(int(s) for s in size), mode=INTERPOLATION,
                        align_corners=False)
    return out.reshape(*m.shape[:-2], *out.shape[-2:])


def resolve_layer(model: nn.Module, name: str | None) -> nn.Module:
    """A layer by its module name (e.g. `features.10`); None means the model's Grad-CAM layer."""
    if name is None:
        return find_cam_layer(model)
    if not isinstance(name, str):
        raise CifarlensError(
            f"layer must be a module of the model, its name or None, got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        # the model's own Grad-CAM layer (a block for resnet18) first, then the conv layers from
        # the last one back; any module name works, these are the usual choices
        default = layer_name(model, find_cam_layer(model))
        convs = [n for n, m in modules.items() if n and n != default
                 and isinstance(m, nn.Conv2d)][::-1]
        few = [f"{default} (default)"] + convs[:5]
        more = len(convs) - 5
        raise CifarlensError(
            f"no layer {name!r} in this model; valid names include: {', '.join(few)}"
            + (f" and {more} more (any name in model.named_modules())" if more > 0 else ""))
    return modules[name]


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The module name of `layer` in `model` (e.g. `features.14`), or its class name if absent."""
    for name, mod in model.named_modules():
        if mod is layer:
            return name
    return type(layer).__name__


_layer_name = layer_name  # the name the stage used before the split
