"""What a stage needs first: the one place that decides it, for the CLI and the study alike.

A run goes through training, then evaluation (predictions and metrics), then failure
discovery, then Grad-CAM of the failures. Each `ensure_*` makes its stage's output only when it
is missing or was made from another checkpoint than the run's best.pt now (`Run.current`),
after making what that stage reads. Stages themselves never run each other.

    train -> predictions/metrics (evaluate) -> failures -> explanation (explain)
                                                       -> neighbours (features of train + split)
    train -> accuracy under corruption (robustness: needs only the checkpoint)
"""

from __future__ import annotations

from collections.abc import Callable

from cifarlens import _console as console
from cifarlens._defaults import CONFIDENT
from cifarlens.runs import Run
from cifarlens.stages.evaluate import evaluate
from cifarlens.stages.explain import explain
from cifarlens.stages.failures import find_failures
from cifarlens.stages.neighbours import add_neighbours, split_features
from cifarlens.stages.robustness import RobustnessRequest, current_robustness, run_robustness
from cifarlens.training.config import TrainConfig
from cifarlens.training.loop import train
from cifarlens.training.runtime import resolve_device

Log = Callable[[str], None]


def ensure_trained(cfg: TrainConfig, run: Run, *, progress: bool, log: Log) -> bool:
    """Train `run` (resuming from its last good checkpoint) unless it finished. True when this
    call trained."""
    if run.is_done():
        return False
    train(cfg, run.path, resume=True, progress=progress, log=log)
    return True


def ensure_evaluated(run: Run, splits: tuple[str, ...] = ("val", "test"), *,
                     figures: tuple[str, ...] = ("test",), progress: bool = True,
                     log: Log | None = None) -> bool:
    """Predictions and metrics of `splits` from the run's best.pt now. `figures`: the splits
    whose figures to draw when evaluating (drawing is most of evaluate's time). True when this
    call evaluated."""
    if all(run.current("metrics", s) is not None for s in splits):
        return False
    evaluate(run, splits, figures=figures, progress=progress, log=log or console.log)
    return True


def ensure_failures(run: Run, split: str = "test", *, top: int = 12,
                    confident: float = CONFIDENT, progress: bool = True,
                    log: Log | None = None) -> bool:
    """The split's ranked failures (predictions first). True when this call found them."""
    if run.current("predictions", split) is None:
        ensure_evaluated(run, (split,), figures=(split,), progress=progress, log=log)
    if run.current("failures", split) is not None:
        return False
    find_failures(run, split, top=top, confident=confident, progress=progress,
                  log=log or console.log)
    return True


def ensure_explained(run: Run, split: str = "test", *, failures: int = 12,
                     progress: bool = True, log: Log | None = None) -> bool:
    """Grad-CAM of the split's top failures (failures first). True when this call explained."""
    ensure_failures(run, split, top=failures, progress=progress, log=log)
    if run.current("explanation", split) is not None:
        return False
    explain(run, split, failures=failures, progress=progress, log=log or console.log)
    return True


def ensure_features(run: Run, splits: tuple[str, ...] = ("train", "test"), *,
                    layer: str | None = None, progress: bool = True) -> bool:
    """The Run's feature cache of `splits` (float16, the default layer unless `layer`), made
    from best.pt now: what the study's change view reads. True when this call computed any."""
    todo = [s for s in splits if run.current("features", s, layer or "") is None]
    for s in todo:
        split_features(run, s, layer, progress=progress)
    return bool(todo)


def ensure_neighbours(run: Run, split: str = "test", *, layer: str | None = None,
                      top: int = 12, progress: bool = True, log: Log | None = None) -> bool:
    """Every failure of the split with its nearest training images and the tested share
    (failures first; features from the Run's cache or one pass). True when this call added
    them."""
    ensure_failures(run, split, top=top, progress=progress, log=log)
    if run.current("neighbours", split, layer or "") is not None:
        return False
    add_neighbours(run, split, layer=layer, progress=progress, log=log or console.log)
    return True


def ensure_robustness(run: Run, request: RobustnessRequest | None = None, *,
                      progress: bool = True, log: Log | None = None) -> bool:
    """The run's accuracy under the common corruptions, on what `request` asks (default: the
    device's images and corruptions), from its best.pt now. True when this call evaluated."""
    request = request or RobustnessRequest()
    if current_robustness(run, request) is not None:
        return False
    run_robustness(run, "test", plan=request.plan(resolve_device("auto")),
                   images=request.images, progress=progress, log=log or console.log)
    return True
