"""Models, one page top to bottom. `build_model(name, num_classes)` is the registry entry point.

`baseline` is the seed report's VGG-style CNN, reconstructed from its numbers: with 100 classes
it has exactly 10,462,756 parameters and 650,612,736 FLOPs per 3x32x32 image (multiply-add = 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import CifarlensError


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=True), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGG(nn.Module):
    """Stages of 3x3 conv+BN+ReLU, a 2x2 max pool after each, then an MLP head with dropout."""

    def __init__(self, num_classes: int = 100, widths=(64, 128, 256, 512), depths=(2, 3, 3, 3),
                 hidden=(1024, 512), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width, depth in zip(widths, depths, strict=True):
            for _ in range(depth):
                layers += conv_bn_relu(cin, width)
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** len(widths)
        head: list[nn.Module] = [nn.Flatten()]
        fin = cin * side * side
        for h in hidden:
            head += [nn.Linear(fin, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            fin = h
        head.append(nn.Linear(fin, num_classes))
        self.classifier = nn.Sequential(*head)
        # Grad-CAM explains the rectified output of the last conv layer (before its pool), as the
        # seed report did. Its ReLU is not in-place so the captured activation stays intact.
        last_relu = self.features[-2]
        assert isinstance(last_relu, nn.ReLU)
        self.features[-2] = nn.ReLU(inplace=False)
        self.cam_layer: nn.Module = self.features[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, Callable[[int], nn.Module]] = {
    # The seed report's model.
    "baseline": lambda n: VGG(n),
    # A quarter-width sibling with the same shape, for fast tests and CPU smoke runs.
    "small": lambda n: VGG(n, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), hidden=(256,)),
}


def build_model(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise CifarlensError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    return MODELS[name](num_classes)
