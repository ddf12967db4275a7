"""What a study will do and about how long it takes, said before it trains.

The rate comes from a finished run of the same study (its done.json) or from a few training
steps of the planned model timed on random tensors at the planned batch size, precision and
threads (about two seconds at most), on this machine."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarlens._console import fmt_duration
from cifarlens.data.load import load_dataset
from cifarlens.data.split import stratified_split
from cifarlens.training.models import build_model
from cifarlens.training.runtime import autocast, resolve_device, resolve_precision


@dataclass
class Plan:
    runs: int  # runs still to train
    arms: int
    seeds: int
    epochs: int
    images: int  # training images per epoch (full batches)
    device: str
    precision: str
    threads: int


def train_images(labels, val_fraction: float, seed: int, train_limit: int | None,
                 batch_size: int) -> int:
    """Images one epoch trains on: the split's train part (or its subset), full batches only."""
    n = len(stratified_split(labels, val_fraction, seed)[0])
    if train_limit is not None:
        n = min(n, train_limit)
    return (n // batch_size) * batch_size


def duration_s(plan: Plan, rate: float) -> float:
    return plan.runs * plan.epochs * plan.images / rate



def plan_line(plan: Plan, rate: float | None, how: str) -> str:
    def n(k: int, word: str) -> str:
        return f"{k:,} {word}{'s' * (k != 1)}"

    line = (f"plan: {n(plan.runs, 'run')} to train ({n(plan.arms, 'arm')} x "
            f"{n(plan.seeds, 'seed')}), {n(plan.epochs, 'epoch')} x {plan.images:,} images each, "
            f"on {plan.device} ({plan.precision}, {n(plan.threads, 'thread')})")
    if rate is None or plan.runs == 0:
        return line
    return line + f"; {how} {rate:,.0f} img/s -> about {fmt_duration(duration_s(plan, rate))}"


def recorded_rate(runs: list[Path], images: int) -> float | None:
    """Training rate of a finished run of this study: epochs x images / wall time."""
    for run in runs:
        try:
            done = json.loads((run / "done.json").read_text())
            rate = done["epochs"] * images / done["wall_time_s"]
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
        if rate > 0:
            return rate
    return None


def measured_rate(model_name: str, num_classes: int, side: int, batch_size: int, device: str,
                  precision: str, budget_s: float = 2.0, max_steps: int = 4) -> float:
    """Images per second of SGD steps on random tensors: one warm-up step, then steps until
    budget_s. The global RNG is forked, so training's seeding is untouched."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        model = build_model(model_name, num_classes).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch_size, 3, side, side, device=dev)
        y = torch.randint(0, num_classes, (batch_size,), device=dev)

        def step() -> None:
            with autocast(dev, prec):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, steps = time.perf_counter(), 0
        while steps < max_steps and (steps == 0 or time.perf_counter() - t0 < budget_s):
            step()
            steps += 1
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return steps * batch_size / max(time.perf_counter() - t0, 1e-9)


def say_plan(todo, say) -> None:
    """One line before a study trains: runs x epochs x images, device, and the time estimate.
    todo: the study's (arm, TrainConfig, Run) list. Best effort: a failure here (data not
    there yet) leaves the line without its estimate, and training says what is wrong."""
    if not todo:
        return
    cfg = todo[0][1]
    dev = resolve_device(cfg.device)
    plan = Plan(runs=sum(not (run.path / "done.json").exists() for _, _, run in todo),
                arms=len({arm for arm, _, _ in todo}), seeds=len({c.seed for _, c, _ in todo}),
                epochs=cfg.epochs, images=0, device=str(dev),
                precision=resolve_precision(cfg.precision, dev), threads=torch.get_num_threads())
    rate, how = None, "measured"
    try:

        data = load_dataset(cfg.dataset, cfg.data_dir, progress=False)
        plan.images = train_images(data.train_y, cfg.val_fraction, cfg.seed, cfg.train_limit,
                                   cfg.batch_size)
        rate = recorded_rate([run.path for _, _, run in todo], plan.images)
        if rate is not None:
            how = "recorded"
        elif plan.runs:
            rate = measured_rate(cfg.model, data.num_classes, data.train_x.shape[-1],
                                 cfg.batch_size, cfg.device, cfg.precision)
    except Exception as e:  # noqa: BLE001 - the estimate must never stop a study
        say(f"plan: no time estimate ({type(e).__name__})")
        return
    say(plan_line(plan, rate, how))
