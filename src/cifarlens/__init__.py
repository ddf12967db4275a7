"""cifarlens: train, evaluate, explain and compare CIFAR CNNs in one honest, reproducible study.

The public API is this flat namespace (docs/api.md has an example of each):

    Data       load_dataset, write_synthetic
    Training   TrainConfig, make_config, build_model, train
    A run      Run, load_model, load_split
    Analyses   evaluate, find_failures, explain
    Grad-CAM   gradcam, gradcam_pair, overlay
    A study    run_study, demo, render_report

    >>> import cifarlens
    >>> run = cifarlens.Run.open("runs/smoke")
    >>> model, config = cifarlens.load_model(run)
    >>> images, labels, indices = cifarlens.load_split(run, "test")
    >>> cams = cifarlens.gradcam(model, images[:8])          # the predicted class's maps

Each name is imported on first use (PEP 562): `import cifarlens` itself imports neither torch
nor matplotlib, so `cifarlens --help` and `cifarlens report` start in a fraction of a second
instead of the several seconds torch's import costs (docs/architecture.md, "Import time").
"""

from __future__ import annotations

import importlib
from typing import Any

from cifarlens._version import __version__

# name -> the module that defines it (the one place a public name is looked up)
_API: dict[str, str] = {
    "load_dataset": "cifarlens.data.load",
    "write_synthetic": "cifarlens.data.synth",
    "TrainConfig": "cifarlens.training.config",
    "make_config": "cifarlens.training.config",
    "build_model": "cifarlens.training.models",
    "train": "cifarlens.training.loop",
    "Run": "cifarlens.runs",
    "load_model": "cifarlens.runs",
    "load_split": "cifarlens.runs",
    "evaluate": "cifarlens.stages.evaluate",
    "find_failures": "cifarlens.stages.failures",
    "explain": "cifarlens.stages.explain",
    "gradcam": "cifarlens.cam.gradcam",
    "gradcam_pair": "cifarlens.cam.gradcam",
    "overlay": "cifarlens.cam.figures",
    "run_study": "cifarlens.study.run",
    "demo": "cifarlens.study.run",
    "render_report": "cifarlens.report.render",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'cifarlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
