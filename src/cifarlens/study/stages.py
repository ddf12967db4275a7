"""What a study needs from each run, done only when missing or stale."""

from __future__ import annotations

from pathlib import Path

from cifarlens._defaults import CONFIDENT

# The tracking figure and its per-model scale live with the other Grad-CAM figures.
from cifarlens.cam.figures import model_scale, plot_tracking  # noqa: E402,F401
from cifarlens.runs import Run
from cifarlens.training.config import TrainConfig
from cifarlens.training.loop import train


def stage_train(cfg: TrainConfig, run: Run | Path, progress: bool, say, arm: str) -> None:
    run = Run.of(run)
    if run.is_done():
        return
    say(f"[{arm} seed {cfg.seed}] training")
    train(cfg, run.path, resume=True, progress=progress, log=say)


def stage_evaluate(run: Run | Path, say, figures: bool = True) -> None:
    """Evaluate unless both splits' predictions and metrics come from the run's final best.pt
    (an analysis made from any other checkpoint is made again, never reused). `figures`: draw
    the run's test figures; the report shows those of the first seed only, and drawing is most
    of evaluate's time (docs/benchmarks.md section 10): `cifarlens evaluate RUN` draws them
    for any other run."""
    from cifarlens.analysis.evaluate import evaluate

    run = Run.of(run)
    if all(run.metrics_current(s) for s in ("val", "test")):
        return
    evaluate(run, ("val", "test"), figures=("test",) if figures else (), log=say)


def run_finished(run: Run | Path) -> bool:
    run = Run.of(run)
    return run.is_done() and all(run.has(Run.metrics_name(s)) for s in ("val", "test"))


def stage_failures(run: Run | Path, top: int, say, progress: bool = True) -> None:
    """Failures, then Grad-CAM of them, unless already made from the run's current best.pt."""
    from cifarlens.analysis.failures import find_failures
    from cifarlens.cam.explain import explain_run

    run = Run.of(run)
    if run.current_failures("test") is None:
        find_failures(run, "test", top=top, confident=CONFIDENT, log=say)
    if run.current_explanation("test") is None:
        explain_run(run, "test", failures=top, log=say, progress=progress)
