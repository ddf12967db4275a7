"""training/features.py: the hooked forward pass that gives a model's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cifarlens.errors import CifarlensError
from cifarlens.training import features as FE
from cifarlens.training.models import build_model
from cifarlens.training.runtime import infer_logits

NORM = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _manual_input(x: np.ndarray) -> torch.Tensor:
    m, s = torch.tensor(NORM["mean"]).view(1, 3, 1, 1), torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    return (torch.from_numpy(x).float() / 255 - m) / s


@pytest.mark.parametrize("name", ["small", "resnet18"])
def test_hook_returns_exactly_the_last_linears_input(name):
    torch.manual_seed(0)
    model = build_model(name, 10)
    model.train()  # features() must use eval mode and give the mode back
    x = _images(12 if name == "small" else 4)
    got = FE.features(model, x, NORM, batch_size=5 if name == "small" else 3)
    assert got.dtype == np.float16 and model.training
    model.eval()
    with torch.no_grad():
        xm = _manual_input(x)
        ref = (model.classifier[:-1](model.features(xm)) if name == "small"
               else torch.flatten(model.pool(model.layer4(model.layer3(model.layer2(
                   model.layer1(model.stem(xm)))))), 1))
    np.testing.assert_allclose(got.astype(np.float32), ref.numpy(), rtol=2e-3, atol=1e-4)
    # and the last Linear maps them onto the logits inference gives
    last = FE.feature_layer(model).module
    with torch.no_grad():
        logits = last(torch.from_numpy(got.astype(np.float32))).numpy()
    want = infer_logits(model, x, NORM["mean"], NORM["std"], device=torch.device("cpu")).numpy()
    np.testing.assert_allclose(logits, want, atol=2e-3)
    assert not any(m._forward_hooks for m in model.modules())  # the hook is gone
    assert torch.is_grad_enabled()


def test_a_named_layer_gives_its_output_flattened_and_bad_names_are_refused():
    torch.manual_seed(0)
    model = build_model("small", 10).eval()
    x = _images(6, seed=1)
    got = FE.features(model, x, NORM, layer="features.14")
    with torch.no_grad():
        ref = model.features[:15](_manual_input(x)).flatten(1)
    assert got.shape == (6, 128 * 4 * 4)
    np.testing.assert_allclose(got.astype(np.float32), ref.numpy(), rtol=2e-3, atol=1e-4)
    with pytest.raises(CifarlensError, match="no module 'nope'"):
        FE.feature_layer(model, "nope")
    with pytest.raises(CifarlensError, match="no nn.Linear"):
        FE.feature_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.block(x)).mean((2, 3)))


class _Huge(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)) * 1e6)


def test_a_layer_run_twice_or_features_beyond_float16_are_refused():
    x = _images(4, seed=2)
    with pytest.raises(CifarlensError, match="more than once"):
        FE.features(_Twice(), x, NORM, layer="block")
    with pytest.raises(CifarlensError, match="beyond float16"):
        FE.features(_Huge(), x, NORM)
