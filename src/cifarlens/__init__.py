"""cifarlens: train, evaluate, explain and compare CIFAR CNNs in one reproducible study.

The public Python API:
    load_model(run_dir, which="best"|"last") -> (nn.Module in eval mode, config dict)
    load_split(run_dir, "train"|"val"|"test") -> (normalized images, labels, dataset indices)
    cifarlens.explain.gradcam(model, images, targets=None, layer=None) -> Tensor[N, H, W]
        (targets=None: the predicted class; layer: a module or its name, e.g. "features.10")
    cifarlens.cam_figures.overlay(image, cam) -> RGB uint8 array for display
Submodules (data, models, train, evaluate, failures, explain, gradcam, cam_metrics,
cam_figures, plots, stats, study, report, ...) load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model", "load_split", "__version__"]

_SUBMODULES = {"data", "models", "train", "runs", "evaluate", "failures", "explain",
               "explanations", "metrics", "stats", "study", "report", "complexity", "synth",
               "download", "augment", "browse", "figures", "gradcam", "cam_metrics",
               "cam_figures", "runtime", "userdata", "plots"}


def __getattr__(name: str) -> Any:
    if name in ("load_model", "load_split"):
        from cifarlens import runs

        return getattr(runs, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cifarlens' has no attribute {name!r}")
