"""The check a user's model factory passes before any file of a run is written.

One eval-mode forward pass on one image misses what breaks training: a model without
parameters, integer outputs, a shape right for one image but not a batch, a forward that fails
in training mode (batch norm on its statistics, dropout) or a graph that cannot be
differentiated. So the factory's model takes one training step's forward and backward on two
images, on a copy (the model handed back is untouched: its parameters, buffers and gradients)
and with the RNG forked (the run's seeded stream is not advanced); each failure is one line.
"""

from __future__ import annotations

import copy
import traceback

import torch
from torch import nn

from cifarlens.errors import CifarlensError

BATCH = 2


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else traceback.format_exception_only(type(e), e)[-1].strip()


def _shape(out: object) -> object:
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def check_training_step(model: nn.Module, name: str, num_classes: int, side: int = 32) -> None:
    """Refuse, in one line, a model that cannot be trained on (N, 3, side, side) batches into
    (N, num_classes) float logits."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CifarlensError(f"model {name}: it has no trainable parameters")
    try:
        twin = copy.deepcopy(model)
    except Exception as e:
        raise CifarlensError(f"model {name}: it cannot be copied for the check "
                             f"({type(e).__name__}: {_first_line(e)})") from None
    twin.train()
    where = f"a training step on a {BATCH}x3x{side}x{side} batch"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.rand(BATCH, 3, side, side)
        try:
            out = twin(x)
        except Exception as e:
            raise CifarlensError(f"model {name}: the forward pass of {where} failed: "
                                 f"{type(e).__name__}: {_first_line(e)}") from None
        if _shape(out) != (BATCH, num_classes):
            raise CifarlensError(f"model {name}: {where} gave output {_shape(out)}, expected "
                                 f"({BATCH}, {num_classes}) logits")
        if not out.is_floating_point():
            raise CifarlensError(f"model {name}: its logits are {out.dtype}, not floating point")
        if not out.requires_grad:
            raise CifarlensError(f"model {name}: its output does not depend on its parameters "
                                 "(no gradient reaches them)")
        try:
            nn.functional.cross_entropy(out.float(), torch.arange(BATCH) % num_classes).backward()
        except Exception as e:
            raise CifarlensError(f"model {name}: the backward pass of {where} failed: "
                                 f"{type(e).__name__}: {_first_line(e)}") from None
    if not any(p.grad is not None for p in twin.parameters()):
        raise CifarlensError(f"model {name}: no gradient reaches its parameters")
