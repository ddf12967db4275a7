"""Parameter and FLOP counts, measured by torch's own FLOP counter (a multiply-add counts as two)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
