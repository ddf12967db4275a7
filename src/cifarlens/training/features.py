"""Features of a trained model: the representation its classifier reads, for every image of a
split, in one batched, hooked forward pass.

`feature_layer` picks where (by default the input of the last nn.Linear; a module name picks
that module's output), `features` gives (N, D) float16 features. Beside `runtime.infer_logits`,
whose forward pass it hooks; the neighbours computed from them are in `analysis/neighbours.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarlens._console import progress as _progress
from cifarlens.errors import CifarlensError
from cifarlens.training.runtime import infer_logits, resolve_device

FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class FeatureLayer:
    """Where features are read: `module`'s input (`side="input"`) or output, flattened."""

    name: str
    module: nn.Module
    side: str


def feature_layer(model: nn.Module, name: str | None = None) -> FeatureLayer:
    """The input of the model's last `nn.Linear` (its classifier's view of the image), or the
    output of the module called `name` (as in `model.named_modules()`)."""
    modules = dict(model.named_modules())
    if name is None:
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linear:
            raise CifarlensError("the model has no nn.Linear layer; name a feature layer "
                                 "(--feature-layer)")
        return FeatureLayer(linear[-1], modules[linear[-1]], "input")
    if name not in modules or name == "":
        known = [n for n in modules if n][-8:]
        raise CifarlensError(f"no module {name!r} in the model (its last modules: "
                             f"{', '.join(known)})")
    return FeatureLayer(name, modules[name], "output")


def features(model: nn.Module, images_uint8: np.ndarray | torch.Tensor,
             normalize: Mapping[str, Sequence[float]], *, layer: str | FeatureLayer | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu",
             precision: str = "fp32", progress: bool = False) -> np.ndarray:
    """(N, D) float16 features of uint8 NCHW images, in one batched pass in eval mode under
    no_grad: `training.runtime.infer_logits` (the same normalization with `normalize` = the run's
    {"mean", "std"}, channels_last) with a forward hook on the layer, removed afterwards.

    fp32 by default, also for runs trained in bf16: the failures are defined by `evaluate`'s
    predictions, which are fp32, and fp32 features give those logits back through the last
    Linear. bf16 is 2.2x faster for the VGG on this CPU but kept only 98% of the 8 neighbours
    on the smoke model, and fp32 over the quick preset's training split costs 4.8% of its
    training time (docs/label-issues.md, bench/feature_pass.py). Stored as float16 (half the
    memory; cosine ranks move only among near-ties): a value beyond its range is refused.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    where = layer if isinstance(layer, FeatureLayer) else feature_layer(model, layer)
    n = len(images_uint8)
    store: dict[str, Any] = {"out": None, "at": 0, "calls": 0}

    def hook(_module: nn.Module, args: tuple, output: Any) -> None:
        t = args[0] if where.side == "input" else output
        if not isinstance(t, torch.Tensor):
            raise CifarlensError(f"layer {where.name!r} gives a {type(t).__name__}, not a tensor")
        if store["calls"]:  # a module called twice per forward has no one feature
            raise CifarlensError(f"layer {where.name!r} runs more than once in a forward pass; "
                                 "choose another --feature-layer")
        f = t.detach().float().flatten(1).cpu().numpy()
        if store["out"] is None:
            store["out"] = np.empty((n, f.shape[1]), dtype=np.float16)
        peak = float(np.abs(f).max()) if f.size else 0.0
        if not peak <= FLOAT16_MAX:  # also catches nan
            raise CifarlensError(f"features of layer {where.name!r} reach {peak:.3g}, beyond "
                                 "float16; choose another --feature-layer")
        store["out"][store["at"]:store["at"] + len(f)] = f
        store["at"] += len(f)
        store["calls"] += 1

    handle = where.module.register_forward_hook(hook)
    try:
        with _progress(n, f"features ({where.name})", progress, unit="img") as bar:
            def on_batch(k: int) -> None:
                if not store["calls"]:
                    raise CifarlensError(f"layer {where.name!r} is not used by the model's "
                                         "forward pass; choose another --feature-layer")
                store["calls"] = 0
                bar.update(k)

            infer_logits(model, images_uint8, normalize["mean"], normalize["std"], device=dev,
                         precision=precision, batch_size=batch_size, on_batch=on_batch)
    finally:
        handle.remove()
    if store["out"] is None:
        return np.empty((0, 0), dtype=np.float16)
    return store["out"]
