"""Models, one page top to bottom. `build_model(name, num_classes)` is the registry entry point.

`vgg` is the seed report's VGG-style CNN, reconstructed from its numbers: with 100 classes
it has exactly 10,462,756 parameters and 650,612,736 FLOPs per 3x32x32 image (multiply-add = 2).
It was first called `baseline`; that name still works everywhere (ALIASES), so old runs load.
`resnet18` is the CIFAR-style ResNet-18 of pytorch-cifar100 (3x3 stem, no max-pool, four stages
of two basic blocks, 64-128-256-512 channels): 11,220,132 parameters with 100 classes.

A model may also be the user's own: `PACKAGE.MODULE:FACTORY`, a callable `f(num_classes) ->
nn.Module` importable from the user's environment (sys.path, e.g. via PYTHONPATH). Importing it
runs the user's code, by the user's explicit choice. A run records where its model came from
(`model_source`), with the sha256 of the factory's source file, so a resumed run or a reloaded
model refuses a changed source.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarlens._defaults import MODEL_ALIASES, canonical_model_name
from cifarlens._version import __version__
from cifarlens.errors import CifarlensError
from cifarlens.training.model_check import check_training_step

# --- the seed's VGG -------------------------------------------------------------------------------


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


# --- CIFAR ResNet-18 (pytorch-cifar100's layout) ----------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with an identity (or 1x1 conv+BN projection) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: Grad-CAM captures the last block's output intact.
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem (no max-pool: 32x32 stays 32x32), four stages, global average pool, linear head."""

    # Grad-CAM explains the last block's output: the last 4x4 feature map (a name, not a module
    # attribute, so the block is not registered twice in the state dict).
    cam_layer = "layer4.1"

    def __init__(self, num_classes: int = 100, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for b in range(n):
                stage.append(BasicBlock(cin, width, stride=2 if i > 0 and b == 0 else 1))
                cin = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


MODELS: dict[str, Callable[[int], nn.Module]] = {
    # The seed report's model.
    "vgg": lambda n: VGG(n),
    # A smaller VGG (quarter width, one conv per stage, one hidden layer): fast tests and CPU
    # smoke runs.
    "small": lambda n: VGG(n, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), hidden=(256,)),
    # The field's common CIFAR reference (pytorch-cifar100: 75.61% top-1 after 200 epochs).
    "resnet18": lambda n: ResNet(n),
}


# Older names of built-ins (`baseline` -> `vgg`), defined in _defaults.
ALIASES = MODEL_ALIASES


# --- the user's own model: PACKAGE.MODULE:FACTORY ---------------------------------------------------

_USER_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_user_model(name: str) -> bool:
    return bool(_USER_REF.match(name))


def check_model_name(name: str) -> None:
    """A built-in name or the form MODULE:FACTORY (no import yet)."""
    if name not in MODELS and name not in ALIASES and not is_user_model(name):
        raise CifarlensError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}, or give "
                             "your own as PACKAGE.MODULE:FACTORY")


def resolve_factory(ref: str) -> Callable[..., Any]:
    """Import `MODULE:ATTR` and return the callable; one-line errors for every way it can fail."""
    check_model_name(ref)
    mod_name, attr = ref.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise CifarlensError(f"model {ref}: cannot import module {mod_name!r} ({e}); put its "
                             "folder on PYTHONPATH or install it") from None
    except Exception as e:  # the user's module raised while importing
        raise CifarlensError(f"model {ref}: importing {mod_name!r} failed: {type(e).__name__}: "
                             f"{_first_line(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CifarlensError(f"model {ref}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CifarlensError(f"model {ref}: {attr!r} is a {type(obj).__name__}, not a callable "
                             "factory f(num_classes) -> nn.Module")
    return obj


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]


def _source_file(factory: Callable[..., Any], ref: str) -> Path | None:
    """The file the factory is defined in (its module's file for objects inspect cannot place)."""
    try:
        f = inspect.getsourcefile(inspect.unwrap(factory))
    except TypeError:
        f = None
    if f is None:
        f = getattr(importlib.import_module(ref.split(":", 1)[0]), "__file__", None)
    return Path(f).resolve() if f else None


def model_source(name: str) -> dict[str, Any]:
    """Where a model comes from, as recorded in config.json (`model_source`).

    Built-ins: {"kind": "builtin", "ref": "cifarlens.training.models:NAME", "cifarlens": VERSION}.
    User factories: {"kind": "user", "ref": "MODULE:FACTORY", "file": PATH, "sha256": HASH}
    (the hash of the factory's source file: other files it imports are not covered).
    """

    check_model_name(name)
    name = canonical_model_name(name)
    if name in MODELS:
        return {"kind": "builtin", "ref": f"cifarlens.training.models:{name}", "cifarlens": __version__}
    path = _source_file(resolve_factory(name), name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None
    return {"kind": "user", "ref": name, "file": str(path) if path else None, "sha256": digest}


def check_model_source(recorded: dict[str, Any] | None, name: str, where: str = "the run") -> None:
    """Refuse a user model whose source file changed since `where` recorded it."""
    if not recorded or recorded.get("kind") != "user":
        return
    now = model_source(name)
    if now["sha256"] != recorded.get("sha256"):
        raise CifarlensError(
            f"model {name}: its source {now['file']} changed since {where} recorded it (sha256 "
            f"{str(recorded.get('sha256'))[:12]}... vs now {str(now['sha256'])[:12]}...); restore "
            "that file or train a new run")


def build_model(name: str, num_classes: int, *, source: dict[str, Any] | None = None) -> nn.Module:
    """A fresh model. `source` (a run's recorded `model_source`) makes a user model refuse a
    changed source file. A user model is checked with one forward pass on a zero image."""
    check_model_name(name)
    name = canonical_model_name(name)
    if name in MODELS:
        return MODELS[name](num_classes)
    check_model_source(source, name)
    factory = resolve_factory(name)
    try:
        model = factory(num_classes)
    except Exception as e:
        raise CifarlensError(f"model {name}: the factory raised {type(e).__name__}: "
                             f"{_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise CifarlensError(f"model {name}: the factory returned a {type(model).__name__}, "
                             "not a torch.nn.Module")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 32, 32))
    except Exception as e:
        raise CifarlensError(f"model {name}: a forward pass on a 1x3x32x32 image failed: "
                             f"{type(e).__name__}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_classes):
        raise CifarlensError(f"model {name}: a 1x3x32x32 image gave output {shape}, expected "
                             f"(1, {num_classes}) logits")

    check_training_step(model, name, num_classes)  # on a copy: `model` is left as it is
    return model
