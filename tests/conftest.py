"""Shared fixtures: generated datasets in the official format and one trained smoke run.

Training is the slow part of the suite, so one smoke run is trained per session and shared by
every test that only reads it (tests that modify a run copy it first).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

# Two cores: keep torch from oversubscribing them when tests run beside other work. A thread
# count the caller set wins: scripts/test.sh sets OMP_NUM_THREADS=1 for each of its workers,
# and overriding it here gave two workers two threads each on two cores.
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synth100(tmp_path_factory) -> Path:
    """CIFAR-100-format generated data root (50 train / 10 test images per class)."""
    from cifarlens.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth100")
    write_synthetic(root, "cifar100", train_per_class=50, test_per_class=10, seed=0,
                    label_noise=0.05)
    return root


@pytest.fixture(scope="session")
def synth10(tmp_path_factory) -> Path:
    from cifarlens.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth10")
    write_synthetic(root, "cifar10", train_per_class=100, test_per_class=30, seed=1)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, synth100) -> Path:
    """A finished smoke-preset run on the CIFAR-100-format generated data."""
    from cifarlens.training.config import make_config
    from cifarlens.training.loop import train

    out = tmp_path_factory.mktemp("runs") / "smoke"
    cfg = make_config("smoke", data_dir=str(synth100), device="cpu")
    train(cfg, out, progress=False, log=lambda m: None)
    return out


@pytest.fixture
def run_copy(smoke_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(smoke_run, dst)
    return dst


@pytest.fixture(scope="session")
def analysed_run(tmp_path_factory, smoke_run) -> Path:
    """The smoke run with what the explain stage reads and never makes itself: predictions and
    metrics (evaluate) and the ranked test failures (failures)."""
    from cifarlens.stages.evaluate import evaluate
    from cifarlens.stages.failures import find_failures

    dst = tmp_path_factory.mktemp("analysed") / "run"
    shutil.copytree(smoke_run, dst)
    evaluate(dst, device="cpu", log=lambda m: None)
    find_failures(dst, "test", log=lambda m: None)
    return dst


@pytest.fixture
def analysed_copy(analysed_run, tmp_path) -> Path:
    dst = tmp_path / "analysed"
    shutil.copytree(analysed_run, dst)
    return dst


# Tests that train a model, or need one trained (through a fixture), are `slow`: `-m "not slow"`
# gives a quick loop that trains nothing; CI runs them all.
_TRAINS = re.compile(r"\b(train|run_study|demo|execute|train_phase|main)\(|Engine\(")


def _trains(item: pytest.Item) -> bool:
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        funcs += [d.func for name in item.fixturenames for d in info.name2fixturedefs.get(name, ())]
    for f in funcs:
        try:
            if f is not None and _TRAINS.search(inspect.getsource(f)):
                return True
        except (OSError, TypeError):
            continue
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is None and _trains(item):
            item.add_marker(pytest.mark.slow)
    # The files with the most slow tests first, each file kept whole and in order: under
    # scripts/test.sh's workers (one file each) the long files start at once instead of
    # leaving one worker alone with them at the end.
    slow: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        f = item.nodeid.split("::")[0]
        first.setdefault(f, i)
        slow[f] = slow.get(f, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda it: (-slow[it.nodeid.split("::")[0]], first[it.nodeid.split("::")[0]]))
