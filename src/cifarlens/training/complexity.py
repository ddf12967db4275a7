"""Parameter and FLOP counts, measured by torch's own FLOP counter (a multiply-add counts as two)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def count_params(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": total, "trainable_params": trainable}


def count_flops(model: nn.Module, input_shape=(1, 3, 32, 32)) -> int:
    """Forward FLOPs for one image of `input_shape` (batch must be 1)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def complexity(model: nn.Module, input_shape=(1, 3, 32, 32)) -> dict[str, int | float]:
    out: dict[str, int | float] = dict(count_params(model))
    out["flops"] = count_flops(model, input_shape)
    out["gflops"] = round(out["flops"] / 1e9, 4)
    return out


# --- layer by layer ---------------------------------------------------------------------------------


class _OwnFlops(TorchDispatchMode):
    """Counts each op's FLOPs (torch's own formulas, as FlopCounterMode) for the innermost module
    running it, so every FLOP lands in exactly one row and the rows sum to the total."""

    def __init__(self, stack: list[str], flops: dict[str, int]):
        super().__init__()
        self.stack, self.flops = stack, flops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops[self.stack[-1]] += int(formula(*args, **kwargs, out_val=out))
        return out


def layer_table(model: nn.Module, input_shape=(1, 3, 32, 32), depth: int | None = None
                ) -> list[dict[str, Any]]:
    """One row per module that owns parameters or FLOPs, or has no children (ReLU, pool, ...):
    {"name", "type", "output_shape" (without the batch), "params", "flops", "calls"}.

    A module's row holds only what it owns itself: its direct parameters (a shared parameter
    counts once, at its first module) and the FLOPs of ops run in its own forward, not in a
    submodule's. So the rows sum exactly to `complexity(model)`. `depth` merges rows into their
    ancestor at that many name components (depth 1: `features`, `classifier`). The model itself
    is the row named "" (ops in its own forward, e.g. a functional flatten/linear).
    """
    names = {m: n for n, m in model.named_modules()}  # one name per module, the first
    stack: list[str] = [""]
    flops: dict[str, int] = dict.fromkeys(names.values(), 0)
    shapes: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = dict.fromkeys(names.values(), 0)

    def pre(mod, _inp):
        stack.append(names[mod])

    def post(mod, _inp, out):
        n = stack.pop()
        calls[n] += 1
        if n not in shapes:
            shapes[n] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None

    handles = [h for m in names for h in (m.register_forward_pre_hook(pre),
                                          m.register_forward_hook(post))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _OwnFlops(stack, flops):
            model(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    seen: set[int] = set()
    rows: list[dict[str, Any]] = []
    for mod, name in names.items():
        own = [p for p in mod.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        params = sum(p.numel() for p in own)
        leaf = next(iter(mod.children()), None) is None
        if params or flops[name] or (leaf and name):
            rows.append({"name": name, "type": type(mod).__name__, "output_shape": shapes.get(name),
                         "params": params, "flops": flops[name], "calls": calls[name]})
    if depth is None:
        return rows
    merged: dict[str, dict[str, Any]] = {}
    types = {n: type(m).__name__ for m, n in names.items()}
    for r in rows:
        key = ".".join(r["name"].split(".")[:depth]) if r["name"] else ""
        if key not in merged:
            merged[key] = {"name": key, "type": types[key], "output_shape": shapes.get(key),
                           "params": 0, "flops": 0, "calls": calls[key]}
        merged[key]["params"] += r["params"]
        merged[key]["flops"] += r["flops"]
    return list(merged.values())
